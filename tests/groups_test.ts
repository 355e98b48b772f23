/**
 * Networks and replication groups on real datapaths: two networks with the
 * same addresses on two hosts never meet; a hundred ports and a thousand
 * remote MACs take a thousand flows; a broadcast reaches every member of
 * its network once and never comes back; 1024 copies of one packet, each
 * outer header checked against Scapy; a group changed under a 5 ms ping
 * flood loses nothing; and the refusals: a group flows send to, an
 * unknown group, a group too large, a network out of range.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab, type LabHost, type Workload } from "../src/lab/topology.ts";
import { macOf } from "../src/lab/netns.ts";
import type { Datapath } from "../src/tunnel/datapath.ts";
import { parseGroup } from "../src/tunnel/group_syntax.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import {
  addFlows,
  nonZeroStats,
  pinNeighbor,
  runPinned,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
} from "./helpers/lab.ts";
import { ping, pingDuring, tcpdump } from "./helpers/traffic.ts";
import { Workloads } from "./helpers/workloads.ts";
import { scapyJson, scapyMany, toHex } from "./helpers/scapy.ts";
import { Program } from "../src/bpf/program.ts";
import { skbContext, testRun } from "../src/bpf/test_run.ts";
import { ifindex } from "../src/bpf/netif.ts";
import { buildPacket } from "../src/tunnel/packet.ts";
import { parseMatch } from "../src/tunnel/flow_syntax.ts";
import type { PortNames } from "../src/tunnel/match.ts";

const NO_PORTS: PortNames = { number: () => undefined, name: () => undefined };
import { warrenFails, warrenJson, warrenOk } from "./helpers/cli.ts";

/** Adds groups written as text. */
async function addGroups(dp: Datapath, ...groups: string[]): Promise<void> {
  await dp.setGroups(groups.map((g) => parseGroup(g)), "add");
}

/** Brings `host` up with a VXLAN tunnel port that stamps the packet's key as its network. */
async function upWithNetTunnel(lab: Lab, host: LabHost, localIps?: string[]): Promise<void> {
  await lab.up(host, { localIps });
  await lab.datapath(
    host,
    (dp) => dp.addTunnelPort("vx0", "vxlan", { remote_ip: "flow", key: "flow", net: "flow" }),
  );
}

/** Starts tcpdump on a workload's device, both ways, printing link-level headers. */
function capture(w: Workload, filter: string): Promise<Deno.ChildProcess> {
  return tcpdump(w.ns.name, { dev: w.dev, filter, link: true });
}

/** What a capture started by {@link capture} printed, once stopped. */
async function lines(child: Deno.ChildProcess): Promise<string[]> {
  await new Promise((r) => setTimeout(r, 300));
  child.kill("SIGINT");
  const out = await child.output();
  return new TextDecoder().decode(out.stdout).split("\n").filter(Boolean);
}

privilegedTest(
  "networks: two networks with the same addresses on two hosts never meet, flows keyed by net",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await using workloads = new Workloads();
    const nets = [{ id: 100, port: "pr" }, { id: 200, port: "pb" }];
    // Each network has a workload on each host, and both use 10.9.0.1 and
    // 10.9.0.2: a frame that crossed would be answered.
    const w = new Map<string, Workload>();
    for (const [i, h] of lab.hosts.entries()) {
      await upWithNetTunnel(lab, h);
      for (const n of nets) {
        w.set(`${n.id}${h.label}`, await workloads.add(h, n.port, `10.9.0.${i + 1}`));
      }
    }
    for (const h of lab.hosts) {
      const peer = lab.peer(h);
      await lab.datapath(h, async (dp) => {
        for (const n of nets) {
          await dp.addLocalPort(n.port, n.port, { net: n.id });
          const remote = `set_tunnel(id=${n.id},dst=${peer.ip}),output:vx0`;
          await addGroups(dp, `group_id=${n.id},type=all,bucket=output:${n.port},bucket=${remote}`);
          await addFlows(
            dp,
            `priority=10,net=${n.id} actions=group:${n.id}`,
            `priority=100,net=${n.id},dl_dst=${
              w.get(`${n.id}${h.label}`)!.mac
            } actions=output:${n.port}`,
            `priority=100,net=${n.id},dl_dst=${
              w.get(`${n.id}${peer.label}`)!.mac
            } actions=${remote}`,
          );
        }
      });
    }
    const started = new Map<string, Deno.ChildProcess>();
    for (const [k, wl] of w) started.set(k, await capture(wl, ""));
    const [red, blue] = await Promise.all(
      nets.map((n) => ping(w.get(`${n.id}A`)!, "10.9.0.2", { count: 20, interval: 0.02 })),
    );
    assertEquals([red.received, blue.received], [20, 20], red.output + blue.output);
    for (const n of nets) {
      const own = new Set([w.get(`${n.id}A`)!.mac, w.get(`${n.id}B`)!.mac, "ff:ff:ff:ff:ff:ff"]);
      for (const h of ["A", "B"]) {
        const seen = await lines(started.get(`${n.id}${h}`)!);
        // Both ways: 20 requests, 20 replies, and the ARP exchange.
        assert.ok(seen.length >= 40, `net ${n.id} on ${h} saw ${seen.length} frames`);
        for (const line of seen) {
          const macs = [...line.matchAll(/([0-9a-f]{2}(?::[0-9a-f]{2}){5})/g)].map((m) => m[1]);
          assert.ok(macs.length >= 2 && macs.every((m) => own.has(m)), `net ${n.id}: ${line}`);
        }
      }
    }
    // Each port sent what its workload sent and delivered what came back,
    // its network's only: the other network's ports saw the same counts.
    for (const h of lab.hosts) {
      await lab.datapath(h, (dp) => {
        const s = dp.stats();
        const port = (name: string) => s.ports.find((p) => p.name === name)!;
        assertEquals(port("pr").net, 100);
        assertEquals(port("pb").net, 200);
        assertEquals(port("pr").rx_packets, port("pb").rx_packets);
        assertEquals(port("pr").tx_packets, port("pb").tx_packets);
        assertEquals(Object.entries(s.drops).filter(([, n]) => n), []);
      });
    }
  },
);

/** A MAC whose last two bytes are `i`. */
function macOfIndex(prefix: string, i: number): string {
  const h = (n: number) => n.toString(16).padStart(2, "0");
  return `${prefix}:${h(i >> 8)}:${h(i & 255)}`;
}

privilegedTest(
  "networks: 100 local ports and 1000 remote MACs take 1100 flows, not 100 000",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a, b] = lab.hosts;
    await upWithNetTunnel(lab, a);
    await pinNeighbor(lab, a);
    // Ten remote hosts, all reached through B.
    await a.ns.run(["ip", "route", "add", "10.77.0.0/24", "via", b.ip]);
    // 101 veth pairs inside host A: pN is a port, qN (MAC 02:bb:00:00:00:NN)
    // its workload, silent (no IPv6) so that only test-run's frames count.
    await a.ns.sh(
      "sysctl -qw net.ipv6.conf.default.disable_ipv6=1\n" +
        Array.from({ length: 101 }, (_, i) =>
          `ip link add p${i} type veth peer name q${i}
         ip link set q${i} address ${macOfIndex("02:bb:00:00", i)}
         ip link set p${i} up; ip link set q${i} up`).join("\n"),
    );
    const remote = (j: number) => macOfIndex("02:aa:00:00", j);
    await lab.datapath(a, async (dp) => {
      for (let i = 0; i < 100; i++) await dp.addLocalPort(`p${i}`, `p${i}`, { net: 7 });
      // One more port, in another network.
      await dp.addLocalPort("p100", "p100", { net: 8 });
      const flows = [];
      for (let i = 0; i < 100; i++) {
        flows.push(`net=7,dl_dst=${macOfIndex("02:bb:00:00", i)} actions=output:p${i}`);
      }
      for (let j = 0; j < 1000; j++) {
        flows.push(
          `net=7,dl_dst=${remote(j)} actions=set_tunnel(id=7,dst=10.77.0.${j % 10 + 1}),output:vx0`,
        );
      }
      await addFlows(dp, ...flows);
      assertEquals(dp.flows.usage().flows, 1100);
    });
    // Every port reaches remote MACs through the same 1000 flows: a
    // thousand frames from all the ports, each to its remote host with the
    // network's key.
    await a.ns.within(() => {
      using prog = Program.fromPin(`${a.pinDir}/progs/wr_tc_local`);
      for (let i = 0; i <= 100; i++) {
        for (let k = 0; k < 10; k++) {
          const j = (i * 37 + k * 101) % 1000;
          const frame = buildPacket(
            parseMatch(`udp,dl_src=${macOfIndex("02:bb:00:00", i)},dl_dst=${remote(j)}`, NO_PORTS)
              .match,
          );
          const out = testRun(prog, { data: frame, ctx: skbContext(ifindex(`p${i}`)) });
          if (i === 100) {
            // Network 8 has no flow for it.
            assertEquals(out.retval, TC_ACT_SHOT, `p${i} to ${remote(j)}`);
            continue;
          }
          assertEquals(out.retval, TC_ACT_REDIRECT, `p${i} to ${remote(j)}`);
          assertEquals([...out.data.subarray(30, 34)], [10, 77, 0, j % 10 + 1]);
          // The VNI, after Ethernet, IPv4, UDP and VXLAN's flags.
          assertEquals([...out.data.subarray(46, 49)], [0, 0, 7]);
        }
      }
    });
    await lab.datapath(a, (dp) => {
      const hits = dp.dumpFlows({ net: 7 }, { counters: true })
        .reduce((n, f) => n + f.counters!.packets, 0n);
      assertEquals(hits, 1000n);
      assertEquals(nonZeroStats(dp).drop_no_flow, 10);
    });
  },
);

privilegedTest(
  "groups: a broadcast reaches every member host and local port of its network once, and never comes back",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await using workloads = new Workloads();
    const [a, b] = lab.hosts;
    await upWithNetTunnel(lab, a);
    await upWithNetTunnel(lab, b, [b.ip]);
    // Two more member hosts, whose tunnel packets end at B's underlay.
    await b.ns.sh(`ip addr add ${"192.0.2.3"}/32 dev u0; ip addr add ${"192.0.2.4"}/32 dev u0`);
    const bMac = await macOf(b.ns, b.underlay);
    await a.ns.sh(
      [b.ip, "192.0.2.3", "192.0.2.4"]
        .map((ip) => `ip neigh replace ${ip} lladdr ${bMac} dev u0 nud permanent`).join("\n"),
    );
    await pinNeighbor(lab, b);
    const w = [];
    for (let i = 1; i <= 4; i++) w.push(await workloads.add(a, `w${i}`, `10.5.0.${i}`));
    const v = [];
    for (let i = 1; i <= 2; i++) v.push(await workloads.add(b, `v${i}`, `10.5.0.${10 + i}`));
    const tunnelTo = (ip: string) => `bucket=set_tunnel(id=5,dst=${ip}),output:vx0`;
    await lab.datapath(a, async (dp) => {
      for (let i = 1; i <= 4; i++) await dp.addLocalPort(`w${i}`, `w${i}`, { net: i < 4 ? 5 : 6 });
      await addGroups(
        dp,
        `group_id=5,type=all,bucket=output:w1,bucket=output:w2,bucket=output:w3,${
          [b.ip, "192.0.2.3", "192.0.2.4"].map(tunnelTo).join(",")
        }`,
        "group_id=6,type=all,bucket=output:w4",
      );
      await addFlows(dp, "net=5 actions=group:5", "net=6 actions=group:6");
    });
    await lab.datapath(b, async (dp) => {
      for (let i = 1; i <= 2; i++) await dp.addLocalPort(`v${i}`, `v${i}`, { net: 5 });
      await addGroups(
        dp,
        `group_id=5,type=all,bucket=output:v1,bucket=output:v2,${tunnelTo(a.ip)}`,
      );
      await addFlows(dp, "net=5 actions=group:5");
    });
    const arp = [...w, ...v].map((x) => capture(x, "arp"));
    const workloadSaw = await Promise.all(arp);
    const underlay = (h: LabHost, from: string) =>
      tcpdump(h.ns.name, { dev: h.underlay, filter: `udp dst port 4789 and src host ${from}` });
    const [atA, atB] = [await underlay(a, b.ip), await underlay(b, a.ip)];
    await w[0].ns.run([
      "/usr/bin/python3",
      "-c",
      "from scapy.all import *\n" +
      `sendp(Ether(dst='ff:ff:ff:ff:ff:ff',src='${w[0].mac}')/ARP(op=1,hwsrc='${w[0].mac}',` +
      `psrc='10.5.0.1',pdst='10.5.0.99'),iface='eth0',verbose=False)`,
    ]);
    const counts = [];
    for (const c of workloadSaw) counts.push((await lines(c)).length);
    // w1 sent it (and never got it back), w2 and w3 share its network, w4
    // does not; v1 and v2 are network 5 on B.
    assertEquals(counts, [1, 1, 1, 0, 1, 1]);
    // B's XDP takes the copy to its endpoint before a capture would see it
    // (decapsulated once, below); the copies to the two other members pass.
    // tcpdump prints each VXLAN packet's inner frame on a line of its own.
    const tunneled = (await lines(atB)).filter((l) => l.includes("VXLAN"));
    assertEquals(
      tunneled.map((l) => /> ([\d.]+)\.4789: VXLAN.*vni (\d+)/.exec(l)?.slice(1)).sort(),
      [["192.0.2.3", "5"], ["192.0.2.4", "5"]],
    );
    await lab.datapath(b, (dp) => assertEquals(nonZeroStats(dp).decap, 1));
    // B sends nothing back: from a tunnel, a group sends to local ports only.
    assertEquals(await lines(atA), []);
    await lab.datapath(a, (dp) => {
      const g = dp.groups({ counters: true }).find((g) => g.id === 5)!;
      assertEquals(g.counters!.packets, 1n);
      assertEquals(g.counters!.buckets.map((b) => b.packets), [0n, 1n, 1n, 1n, 1n, 1n]);
    });
  },
);

privilegedTest(
  "groups: 1024 buckets through test-run, every copy's outer header as Scapy builds it",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a, b] = lab.hosts;
    await upWithNetTunnel(lab, a);
    const peerMac = await pinNeighbor(lab, a);
    const myMac = await macOf(a.ns, a.underlay);
    await a.ns.run(["ip", "route", "add", "10.200.0.0/16", "via", b.ip]);
    // A queue in front of the veth: a burst of 1023 copies waits there
    // instead of overflowing the peer's.
    await a.ns.run(["tc", "qdisc", "replace", "dev", "u0", "root", "pfifo", "limit", "4096"]);
    const dst = (i: number) => `10.200.${i >> 8}.${i & 255}`;
    await lab.datapath(a, async (dp) => {
      await dp.addLocalPort("web", a.workload.port);
      const buckets = Array.from(
        { length: 1024 },
        (_, i) => `bucket=set_tunnel(id=${1000 + i},dst=${dst(i)}),output:vx0`,
      );
      await addGroups(dp, `group_id=1,type=all,${buckets.join(",")}`);
      await addFlows(dp, "in_port=web actions=group:1");
    });
    const pcap = await Deno.makeTempFile({ suffix: ".pcap" });
    try {
      // Captured as A sends them: B's backlog takes 1000 of a burst.
      const dump = await tcpdump(a.ns.name, {
        dev: a.underlay,
        filter: "udp dst port 4789",
        file: pcap,
        bufferKiB: 16384,
        snaplen: 512,
        // Killed once the copies are out: under load, Scapy and the
        // test-run alone can outlast tcpdump's default 10 s.
        timeout: 120,
      });
      const inner =
        "Ether(src='02:00:00:00:00:0a',dst='02:00:00:00:00:0b')/IP(src='10.1.0.1',dst='10.1.0.2')/UDP(sport=1000,dport=2000)/Raw(b'warren'*10)";
      const [frame] = await scapyMany([inner]);
      const out = await a.ns.within(() => runPinned(a, "wr_tc_local", frame, a.workload.port));
      // The packet itself takes the last bucket: test-run hands it back.
      // The 1023 clones before it went out on the underlay.
      assertEquals(out.retval, TC_ACT_REDIRECT);
      await new Promise((r) => setTimeout(r, 500));
      dump.kill("SIGINT");
      await dump.output();
      const copies = await scapyJson<string[]>(
        `print(json.dumps([bytes(p).hex() for p in rdpcap(data)]))`,
        pcap,
      );
      assertEquals(copies.length, 1023);
      // One source port for all: a hash of the inner flow.
      const sport = (out.data[34] << 8) | out.data[35];
      const expected = await scapyMany(
        Array.from(
          { length: 1024 },
          (_, i) =>
            `Ether(dst='${peerMac}',src='${myMac}')/IP(src='${a.ip}',dst='${
              dst(i)
            }',ttl=64,flags='DF',id=0,tos=0)/UDP(sport=${sport},dport=4789,chksum=0)/VXLAN(vni=${
              1000 + i
            },flags=0x08)/${inner}`,
        ),
      );
      assertEquals(
        [...copies, toHex(out.data)].sort(),
        expected.map(toHex).sort(),
      );
    } finally {
      await Deno.remove(pcap);
    }
    await lab.datapath(a, (dp) => {
      const g = dp.groups({ counters: true })[0];
      assertEquals(g.counters!.buckets.length, 1024);
      assert.ok(g.counters!.buckets.every((b) => b.packets === 1n));
      assertEquals(Object.entries(dp.stats().drops).filter(([, n]) => n), []);
    });
  },
);

privilegedTest("groups: a group changed under a 5 ms ping flood loses nothing", async () => {
  await using lab = await Lab.create({ ipv6: false });
  const tunnelTo = (ip: string) => `bucket=set_tunnel(id=42,dst=${ip}),output:vx0`;
  // The flows flood everything through the group: every packet walks it.
  for (const h of lab.hosts) {
    await upWithNetTunnel(lab, h);
    await pinNeighbor(lab, h);
    await lab.datapath(h, async (dp) => {
      await dp.addLocalPort("web", h.workload.port, { net: 42 });
      await addGroups(
        dp,
        `group_id=42,type=all,bucket=output:web,${tunnelTo(lab.peer(h).ip)}`,
      );
      await addFlows(dp, "net=42 actions=group:42");
    });
  }
  const [a, b] = lab.hosts;
  let changes = 0;
  const r = await pingDuring(
    a.workload,
    b.workload.ip,
    async () => {
      for (let i = 1; i <= 30; i++) {
        for (const h of lab.hosts) {
          // Buckets to a remote that is not there come and go, before and
          // after the ones the pings need.
          const extra = tunnelTo(`192.0.2.${100 + i}`);
          const peer = tunnelTo(lab.peer(h).ip);
          const buckets = i % 2
            ? `${extra},bucket=output:web,${peer}`
            : `bucket=output:web,${peer}`;
          await lab.datapath(h, async (dp) => {
            const result = await dp.setGroups(
              [parseGroup(`group_id=42,type=all,${buckets}`)],
              "modify",
            );
            changes += result.modified;
          });
        }
      }
      // Under load the 60 changes take a minute, and an answer can take more
      // than pingDuring's default 100 ms; every probe sent while the groups
      // changed is still judged.
    },
    0.005,
    500,
  );
  assertEquals(changes, 60);
  assert.ok(r.sent > 100, `only ${r.sent} probes`);
  assertEquals(r.lost, []);
});

privilegedTest(
  "groups on the command line: add, list, a group in use needs --force; bad input changes nothing",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a, b] = lab.hosts;
    const group =
      `group_id=42,type=all,bucket=output:web,bucket=set_tunnel(id=42,dst=${b.ip}),output:vx0`;
    await warrenOk(a, ["up", "--underlay", a.underlay]);
    assert.match(
      await warrenOk(a, ["port", "add", "web", a.workload.port, "--net", "42"]),
      /network 42/,
    );
    await warrenOk(a, [
      "tunnel",
      "add",
      "vx0",
      "vxlan",
      "remote_ip=flow",
      "key=flow",
      "net=flow",
    ]);
    assertEquals(await warrenOk(a, ["group", "add", group]), "1 added\n");
    await warrenOk(a, ["flow", "add", "priority=10,net=42 actions=group:42"]);
    assertEquals(
      await warrenOk(a, ["group", "list"]),
      `${group} packets:0 bytes:0\n  bucket 1 packets:0 bytes:0\n  bucket 2 packets:0 bytes:0\n`,
    );
    assertEquals(await warrenJson(a, ["group", "list"]), [{
      group_id: 42,
      type: "all",
      owner: "",
      packets: 0,
      bytes: 0,
      buckets: [
        { actions: "output:web", packets: 0, bytes: 0 },
        { actions: `set_tunnel(id=42,dst=${b.ip}),output:vx0`, packets: 0, bytes: 0 },
      ],
    }]);
    assertEquals(
      (await warrenJson<{ net: number }[]>(a, ["port", "list"])).map((p) => p.net),
      [42],
    );
    assertEquals(
      (await warrenJson<{ net: string }[]>(a, ["tunnel", "list"])).map((p) => p.net),
      ["flow"],
    );
    const state = async () => [
      await warrenOk(a, ["group", "list", "--no-counters"]),
      await warrenOk(a, ["flow", "dump", "--no-counters"]),
      await warrenOk(a, ["port", "list"]),
    ];
    const before = await state();
    assertEquals(before[1], "priority=10,net=42 actions=group:42\n");

    // A group flows send to stays, unless --force takes the flows too.
    await warrenFails(a, ["group", "del", "42"], 1, "1 flow(s) send to group 42");
    assertEquals(await state(), before);
    // Bad input: each names what is wrong, and nothing changes.
    await warrenFails(a, ["flow", "add", "net=42,ip actions=group:9"], 1, "there is no group 9");
    await warrenFails(
      a,
      ["group", "add", group.replace(",bucket=output:web", "")],
      1,
      "group 42 exists already, with other buckets",
    );
    // The same group again is no change: a rerun after a crash completes.
    assertEquals(await warrenOk(a, ["group", "add", group]), "0 added, 1 unchanged\n");
    await warrenFails(a, ["group", "mod", group.replace("=42,", "=43,")], 1, "no group 43");
    const big = Array.from(
      { length: 4097 },
      (_, i) => `bucket=set_tunnel(id=${i},dst=${b.ip}),output:vx0`,
    ).join(",");
    const bigFile = await Deno.makeTempFile({ suffix: ".groups" });
    try {
      // Too long for one argument: from a file.
      await Deno.writeTextFile(bigFile, `group_id=7,type=all,${big}\n`);
      await warrenFails(
        a,
        ["group", "add", "--file", bigFile],
        1,
        "group 7: 4097 buckets; a group has at most 4096",
      );
    } finally {
      await Deno.remove(bigFile);
    }
    await warrenFails(
      a,
      ["group", "add", "group_id=8,type=all,bucket=output:web,bucket=output:web"],
      1,
      "group 8: bucket 2 (output:web) repeats bucket 1",
    );
    await warrenFails(
      a,
      ["group", "add", "group_id=9,type=select,bucket=output:web"],
      1,
      "type=all",
    );
    await warrenFails(
      a,
      ["port", "add", "p2", "u0", "--net", "4294967296"],
      2,
      "--net: 4294967296 is out of range",
    );
    await warrenFails(
      a,
      ["flow", "add", "metadata=0x100000000 actions=drop"],
      1,
      "0x100000000 does not fit net's 32 bits",
    );
    const file = await Deno.makeTempFile({ suffix: ".json" });
    try {
      const apply = async (s: object, fails: string) => {
        await Deno.writeTextFile(file, JSON.stringify(s));
        await warrenFails(a, ["apply", file], 1, fails);
        assertEquals(await state(), before);
      };
      const ports = [{ name: "web", device: a.workload.port, net: 42 }];
      const tunnels = [{
        name: "vx0",
        proto: "vxlan",
        options: { remote_ip: "flow", key: "flow", net: "flow" },
      }];
      await apply(
        { ports: [{ ...ports[0], net: 0 }], tunnels },
        "ports[0] (web): net: 0 is out of range",
      );
      await apply(
        { ports, tunnels, groups: [group], flows: ["net=42 actions=group:43"] },
        `${file}:1: priority=32768,net=42 actions=group:43: there is no group 43 in the state`,
      );
      await apply(
        { ports, tunnels, groups: [`group_id=7,type=all,${big}`] },
        "groups[0]: group 7: 4097 buckets",
      );
      await apply(
        { ports, tunnels, groups: ["group_id=3,type=all,bucket=output:web9"] },
        'groups[0]: group 3: output:web9: there is no port named "web9"',
      );
      // A state with groups: the dry run says what would change, apply
      // makes it so, and again changes nothing.
      const group2 = "group_id=2,type=all,bucket=output:web";
      await Deno.writeTextFile(
        file,
        JSON.stringify({
          ports,
          tunnels,
          groups: [group2, group.replace(",bucket=output:web", "")],
          flows: ["priority=10,net=42 actions=group:2"],
        }),
      );
      const dry = await warrenJson<{ groups: unknown }>(a, ["apply", "--dry-run", file]);
      assertEquals(dry.groups, { add: [2], change: [42], remove: [] });
      assertEquals(await state(), before);
      assert.match(await warrenOk(a, ["apply", file]), /add group 2\nchange group 42\n/);
      assertEquals(
        await warrenOk(a, ["group", "list", "--no-counters"]),
        `${group2}\ngroup_id=42,type=all,bucket=set_tunnel(id=42,dst=${b.ip}),output:vx0\n`,
      );
      const again = await warrenJson<{ groups: unknown }>(a, ["apply", file]);
      assertEquals(again.groups, { add: [], change: [], remove: [] });
      // Group 42 is in no flow now: it goes with no --force.
      assertEquals(await warrenOk(a, ["group", "del", "42"]), "1 deleted\n");
      await warrenOk(a, ["group", "add", group]);
      await warrenOk(a, ["flow", "add", "priority=20,net=42,arp actions=group:42"]);
    } finally {
      await Deno.remove(file);
    }
    assertEquals(await warrenOk(a, ["group", "del", "42", "--force"]), "1 deleted\n");
    assertEquals(await warrenOk(a, ["flow", "dump", "--group", "42"]), "");
    assertEquals(
      await warrenOk(a, ["flow", "dump", "--no-counters"]),
      "priority=10,net=42 actions=group:2\n",
    );
    // A port in a group's bucket needs --force too, which drops the bucket.
    await warrenFails(a, ["port", "del", "web"], 1, "group(s) 2 use port web");
    await warrenOk(a, ["port", "del", "web", "--force"]);
    assertEquals(await warrenOk(a, ["group", "list", "--no-counters"]), "group_id=2,type=all\n");
    await warrenOk(a, ["down"]);
  },
);

/**
 * The pure parts of the fleet, with no etcd and no root: validation of
 * values, the view's conflict rules, the derivation of a host's state, the
 * key layout, backoff and bounded logs.
 */

import { assert, assertEquals, assertThrows } from "./helpers/assert.ts";
import { Backoff } from "../src/fleet/backoff.ts";
import { type Entry, valueOf } from "../src/fleet/client.ts";
import { derive, type LocalPort, type SelfConfig } from "../src/fleet/derive.ts";
import {
  endpointKey,
  hostKey,
  networkKey,
  parseKey,
  prefixEnd,
  vniKey,
} from "../src/fleet/keys.ts";
import { OnceLog, Throttle } from "../src/fleet/log.ts";
import {
  decodeEndpoint,
  decodeHost,
  decodeNetwork,
  MAX_VALUE_BYTES,
  ValueError,
} from "../src/fleet/validate.ts";
import { FleetState, type FleetView } from "../src/fleet/view.ts";
import { parseAgentConfig } from "../src/fleet/config.ts";
import { compileFlow, compileGroup, namesOf, type PortLookup } from "../src/tunnel/compile.ts";
import { formatFlow, parseFlow } from "../src/tunnel/flow_syntax.ts";
import { formatGroup, parseGroup } from "../src/tunnel/group_syntax.ts";
import { type Port, tunnelPort } from "../src/tunnel/port.ts";

let revision = 100;

/** An etcd entry as the mirror would hold it; revisions increase in call order. */
function entry(key: string, value: unknown, createRevision = ++revision): Entry {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return {
    key,
    value: new TextEncoder().encode(text),
    createRevision,
    modRevision: createRevision,
    lease: "0",
  };
}

/** A view of `entries`, with the lines its log wrote. */
function viewOf(entries: Entry[]): { view: FleetView; lines: string[] } {
  const lines: string[] = [];
  const state = new FleetState(new OnceLog((l) => lines.push(l)));
  state.apply(entries.map((e) => ({ key: e.key, next: e })));
  return { view: state.view(), lines };
}

const host = (n: number, extra: Record<string, unknown> = {}) =>
  entry(hostKey(`h${n}`), {
    underlay: [`192.0.2.${n}`],
    tunnels: [{ protocol: "vxlan", port: 4789 }],
    ...extra,
  });
const net = (name: string, vni: number, protocol = "vxlan") =>
  entry(networkKey(name), { vni, protocol, mtu: 1450 });
const ep = (netName: string, h: number, mac: string, ips: string[] = []) =>
  entry(endpointKey(netName, `h${h}`, mac), { ips });

const mac = (n: number) => `02:00:00:00:00:${n.toString(16).padStart(2, "0")}`;

function self(n: number, ports: Partial<LocalPort>[]): SelfConfig {
  return {
    host: `h${n}`,
    underlay: [`192.0.2.${n}`],
    tunnels: [{ protocol: "vxlan", port: 4789 }],
    ports: ports.map((p, i) => ({
      name: `w${i}`,
      device: `veth${i}`,
      net: "blue",
      mac: mac(n * 16 + i),
      ips: [],
      ...p,
    })),
  };
}

const TUN = "output:fl-vxlan-4789";

Deno.test("derive: two hosts in one network, exactly these flows and groups", () => {
  const { view } = viewOf([
    net("blue", 42),
    host(1),
    host(2),
    ep("blue", 1, mac(16), ["10.0.0.1"]),
    ep("blue", 2, mac(32), ["10.0.0.2", "fd00::2"]),
  ]);
  const { state, problems } = derive(view, self(1, [{ ips: ["10.0.0.1"] }]));
  assertEquals(problems, []);
  const toH2 = `set_tunnel(id=42,dst=192.0.2.2),${TUN}`;
  assertEquals(state, {
    ports: [{ name: "w0", device: "veth0", net: 42 }],
    tunnels: [{
      name: "fl-vxlan-4789",
      proto: "vxlan",
      options: { remote_ip: "flow", key: "flow", net: "flow", dst_port: "4789" },
    }],
    flows: [
      "priority=10,net=42 actions=group:42",
      `priority=100,net=42,dl_dst=${mac(16)} actions=output:w0`,
      `priority=100,net=42,dl_dst=${mac(32)} actions=${toH2}`,
      "priority=200,net=42,arp,arp_op=1,arp_tpa=10.0.0.1 actions=output:w0",
      `priority=200,net=42,arp,arp_op=1,arp_tpa=10.0.0.2 actions=${toH2}`,
    ],
    groups: [`group_id=42,type=all,bucket=output:w0,bucket=${toH2}`],
    neighbours: ["192.0.2.2"],
  });
});

Deno.test("derive: networks stay apart, each flow's net is its own network's", () => {
  const { view } = viewOf([
    net("blue", 1),
    net("red", 2),
    host(1),
    host(2),
    host(3),
    ep("blue", 2, mac(32)),
    ep("red", 3, mac(48)),
    ep("red", 2, mac(33)),
  ]);
  const { state } = derive(view, self(1, [{ net: "blue" }, { net: "red" }]));
  for (const f of state.flows) {
    const v = f.match(/net=(\d+)/)![1];
    const ids = [...f.matchAll(/id=(\d+)/g)].map((m) => m[1]);
    assert(ids.every((id) => id === v), f);
    if (f.includes("output:w0")) assertEquals(v, "1");
    if (f.includes("output:w1")) assertEquals(v, "2");
  }
  // Host 3 is only in red: blue's group does not reach it.
  const blue = state.groups.find((g) => g.startsWith("group_id=1,"))!;
  assert(!blue.includes("192.0.2.3") && blue.includes("192.0.2.2"), blue);
  const red = state.groups.find((g) => g.startsWith("group_id=2,"))!;
  assert(red.includes("192.0.2.3") && red.includes("192.0.2.2") && red.includes("output:w1"), red);
  assertEquals(state.ports.map((p) => [p.name, p.net]), [["w0", 1], ["w1", 2]]);
});

Deno.test("derive: the datapath reads every derived flow, group and port as it is", () => {
  const { view } = viewOf([
    net("blue", 1),
    net("red", 2),
    host(1),
    host(2),
    host(3),
    ep("blue", 2, mac(32), ["10.0.0.2"]),
    ep("red", 3, mac(48), ["10.0.1.3"]),
    ep("red", 2, mac(33)),
  ]);
  const { state } = derive(view, self(1, [{ net: "blue", ips: ["10.0.0.1"] }, { net: "red" }]));
  const ports: Port[] = [
    ...state.ports.map((p, i): Port => ({ kind: "local", ...p, number: i + 1, xdp: false })),
    ...state.tunnels.map((t, i): Port => ({
      ...tunnelPort(t.name, t.proto, "u0", t.options as Record<string, string>),
      number: state.ports.length + i + 1,
    })),
  ];
  const lookup: PortLookup = {
    byName: (name) => ports.find((p) => p.name === name),
    byNumber: (n) => ports.find((p) => p.number === n),
  };
  const names = namesOf(lookup);
  assertEquals(ports.filter((p) => p.kind === "tunnel").map((p) => p.net), ["flow"]);
  // A flow prints its fields in the datapath's order, which may not be
  // derive's: printed and read again it is the same flow.
  const meaning = (text: string) => {
    const { keyBytes, maskBytes, actions, tunKeyBytes } = compileFlow(
      parseFlow(text, names),
      lookup,
    );
    return { keyBytes, maskBytes, actions, tunKeyBytes };
  };
  for (const text of state.flows) {
    assertEquals(meaning(formatFlow(parseFlow(text, names), names)), meaning(text));
  }
  for (const text of state.groups) {
    const g = parseGroup(text);
    compileGroup(g, lookup);
    assertEquals(formatGroup(g, names), text);
  }
});

Deno.test("derive: a MAC claimed twice goes to the newest claim, on every host alike", () => {
  const m = mac(99);
  const entries = [net("blue", 7), host(1), host(2), host(3)];
  entries.push(ep("blue", 2, m, ["10.0.0.9"]), ep("blue", 3, m, ["10.0.0.9"]));
  const { view, lines } = viewOf(entries);
  assertEquals(view.conflicts.filter((c) => c.kind === "mac").map((c) => [c.winner, c.losers]), [[
    "h3",
    ["h2"],
  ]]);
  assert(lines.some((l) => l.includes(m) && l.includes("h3 wins over h2")), lines.join("\n"));
  // Host 1 sends to h3; h2 (a loser, whose config still has the MAC) too.
  const on1 = derive(view, self(1, [{}])).state.flows;
  assert(
    on1.includes(`priority=100,net=7,dl_dst=${m} actions=set_tunnel(id=7,dst=192.0.2.3),${TUN}`),
  );
  const on2 = derive(view, { ...self(2, [{ mac: m }]) }).state.flows;
  assert(
    on2.includes(`priority=100,net=7,dl_dst=${m} actions=set_tunnel(id=7,dst=192.0.2.3),${TUN}`),
  );
  const on3 = derive(view, { ...self(3, [{ mac: m }]) }).state.flows;
  assert(on3.includes(`priority=100,net=7,dl_dst=${m} actions=output:w0`));
  // Both claimants stay members of the network's flooding.
  assert(derive(view, self(1, [{}])).state.groups[0].includes("192.0.2.2"));
});

Deno.test("derive: this host's configuration is the truth about itself", () => {
  const m = mac(77);
  const { view } = viewOf([
    net("blue", 7),
    host(1),
    host(2),
    ep("blue", 2, m),
    ep("blue", 1, mac(16)),
  ]);
  // A local MAC not yet published wins over an older remote claim (a move to here).
  const moved = derive(view, self(1, [{ mac: m }])).state.flows;
  assert(moved.includes(`priority=100,net=7,dl_dst=${m} actions=output:w0`), moved.join("\n"));
  // A claim of this host's that its configuration dropped is withdrawn.
  assert(!moved.some((f) => f.includes(mac(16))), moved.join("\n"));
});

Deno.test("derive: ARP steering for IPv4 only, an IP claimed twice goes to the newest claim", () => {
  const { view } = viewOf([
    net("blue", 5),
    host(1),
    host(2),
    host(3),
    ep("blue", 2, mac(32), ["10.0.0.5", "fd00::5"]),
    ep("blue", 3, mac(48), ["10.0.0.5"]),
  ]);
  assert(
    view.conflicts.some((c) => c.kind === "ip" && c.what === "10.0.0.5" && c.winner === mac(48)),
  );
  const arp = derive(view, self(1, [{}])).state.flows.filter((f) => f.includes("arp"));
  assertEquals(arp, [
    `priority=200,net=5,arp,arp_op=1,arp_tpa=10.0.0.5 actions=set_tunnel(id=5,dst=192.0.2.3),${TUN}`,
  ]);
});

Deno.test("derive: unreachable hosts are skipped and named, others still served", () => {
  const { view } = viewOf([
    net("blue", 3),
    host(1),
    host(2, { tunnels: [{ protocol: "geneve" }] }),
    host(3, { underlay: ["2001:db8::3"] }),
    host(5, { tunnels: [{ protocol: "vxlan", port: 4790 }] }),
    ep("blue", 2, mac(32)),
    ep("blue", 3, mac(48)),
    ep("blue", 4, mac(64)),
    ep("blue", 5, mac(80)),
  ]);
  const { state, problems } = derive(view, self(1, [{}]));
  assertEquals(problems.sort(), [
    "host h2 does not accept vxlan for blue",
    "host h3 has no underlay address of this host's families",
    "host h4 has endpoints in blue but is not registered",
  ]);
  // Host 5 listens on another port: a second tunnel port sends there.
  assertEquals(state.tunnels.map((t) => t.name), ["fl-vxlan-4789", "fl-vxlan-4790"]);
  assert(state.flows.includes(
    `priority=100,net=3,dl_dst=${
      mac(80)
    } actions=set_tunnel(id=3,dst=192.0.2.5),output:fl-vxlan-4790`,
  ));
  assertEquals(state.neighbours, ["192.0.2.5"]);
});

Deno.test("derive: a network etcd does not define, or a protocol the host lacks, installs nothing", () => {
  const { view } = viewOf([net("gre-net", 9, "gre"), host(1)]);
  const { state, problems } = derive(view, self(1, [{ net: "nowhere" }, { net: "gre-net" }]));
  assertEquals(state, { ports: [], tunnels: [], flows: [], groups: [], neighbours: [] });
  assertEquals(problems, [
    "network gre-net uses gre, which this host does not accept",
    "network nowhere is not defined in etcd: ports w0 wait",
  ]);
});

Deno.test("derive: the same view in any order gives the same state", () => {
  const entries = [net("blue", 1), net("red", 2)];
  for (let h = 1; h <= 6; h++) {
    entries.push(host(h), ep("blue", h, mac(h), [`10.0.0.${h}`]), ep("red", h, mac(h + 100)));
  }
  const me = self(1, [{ net: "blue" }, { net: "red" }]);
  const a = derive(viewOf(entries).view, me).state;
  const b = derive(viewOf([...entries].reverse()).view, { ...me, ports: [...me.ports].reverse() })
    .state;
  assertEquals(a, b);
});

Deno.test("hostile values are refused with a reason, never decoded", () => {
  const bad: [string, () => unknown, string][] = [
    ["vni 0", () => decodeNetwork("k", "n", '{"vni":0,"protocol":"vxlan","mtu":1450}'), "vni 0"],
    [
      "vni 2^24",
      () => decodeNetwork("k", "n", '{"vni":16777216,"protocol":"vxlan","mtu":1450}'),
      "not in 1..16777215",
    ],
    [
      "vni text",
      () => decodeNetwork("k", "n", '{"vni":"42","protocol":"vxlan","mtu":1450}'),
      "vni",
    ],
    ["protocol", () => decodeNetwork("k", "n", '{"vni":1,"protocol":"ipip","mtu":1450}'), "ipip"],
    ["mtu", () => decodeNetwork("k", "n", '{"vni":1,"protocol":"vxlan","mtu":70000}'), "mtu"],
    ["name", () => decodeNetwork("k", "a b", '{"vni":1,"protocol":"vxlan","mtu":1450}'), "name"],
    ["flow syntax in a name", () => decodeNetwork("k", "x,actions=drop", "{}"), "not a name"],
    ["not JSON", () => decodeNetwork("k", "n", "{vni:1"), "not JSON"],
    [
      // Valid but for one byte that is not UTF-8, in a field no reader knows: still refused.
      "not UTF-8",
      () => {
        const text = new TextEncoder().encode(
          '{"underlay":["192.0.2.1"],"tunnels":[{"protocol":"vxlan"}],"x":"?"}',
        );
        text[text.length - 3] = 0xff;
        return decodeHost("k", "h", valueOf(text));
      },
      "not JSON",
    ],
    ["not an object", () => decodeNetwork("k", "n", "[1]"), "not a JSON object"],
    [
      "too big",
      () => decodeEndpoint("k", "n", "h", mac(1), " ".repeat(MAX_VALUE_BYTES + 1)),
      "bytes",
    ],
    ["multicast MAC", () => decodeEndpoint("k", "n", "h", "03:00:00:00:00:01", "{}"), "multicast"],
    [
      "upper-case MAC",
      () => decodeEndpoint("k", "n", "h", "02:00:00:00:00:AB", "{}"),
      "written as",
    ],
    ["zero MAC", () => decodeEndpoint("k", "n", "h", "00:00:00:00:00:00", "{}"), "no one's"],
    ["bad IP", () => decodeEndpoint("k", "n", "h", mac(1), '{"ips":["10.0.0.256"]}'), "not an IP"],
    [
      "broadcast IP",
      () => decodeEndpoint("k", "n", "h", mac(1), '{"ips":["255.255.255.255"]}'),
      "broadcast",
    ],
    [
      "IP as number",
      () => decodeEndpoint("k", "n", "h", mac(1), '{"ips":[167772161]}'),
      "not an address",
    ],
    [
      "too many IPs",
      () =>
        decodeEndpoint(
          "k",
          "n",
          "h",
          mac(1),
          JSON.stringify({ ips: Array.from({ length: 17 }, (_, i) => `10.0.0.${i}`) }),
        ),
      "entries",
    ],
    [
      "no underlay",
      () => decodeHost("k", "h", '{"underlay":[],"tunnels":[{"protocol":"vxlan"}]}'),
      "underlay",
    ],
    [
      "multicast underlay",
      () => decodeHost("k", "h", '{"underlay":["224.0.0.1"],"tunnels":[{"protocol":"vxlan"}]}'),
      "multicast",
    ],
    [
      "port",
      () =>
        decodeHost(
          "k",
          "h",
          '{"underlay":["192.0.2.1"],"tunnels":[{"protocol":"vxlan","port":0}]}',
        ),
      "port",
    ],
    [
      "gre port",
      () =>
        decodeHost("k", "h", '{"underlay":["192.0.2.1"],"tunnels":[{"protocol":"gre","port":1}]}'),
      "gre",
    ],
  ];
  for (const [what, fn, reason] of bad) {
    const err = assertThrows(fn, ValueError, reason);
    assert(err.message.startsWith("k: "), `${what}: ${err.message}`);
  }
  // Unknown fields are ignored (a later version may add them); addresses come out canonical.
  assertEquals(
    decodeEndpoint("k", "n", "h", mac(1), '{"ips":["FD00:0:0::1","10.0.0.1"],"future":{"x":1}}')
      .ips,
    ["fd00::1", "10.0.0.1"],
  );
  assertEquals(
    decodeHost("k", "h", '{"underlay":["192.0.2.1"],"tunnels":[{"protocol":"geneve"}]}').tunnels,
    [
      { protocol: "geneve", port: 6081 },
    ],
  );
});

Deno.test("the view skips hostile values, logs each once, and keeps the good ones", () => {
  const lines: string[] = [];
  const state = new FleetState(new OnceLog((l) => lines.push(l)));
  const bad = entry(networkKey("evil"), { vni: -1, protocol: "vxlan", mtu: 1450 });
  const good = [net("blue", 1), host(1), ep("blue", 1, mac(1), ["10.0.0.1"])];
  const junk = [
    bad,
    entry(endpointKey("blue", "h1", "ff:ff:ff:ff:ff:ff"), { ips: [] }),
    entry(hostKey("h2"), "\u0000\u0001binary"),
    entry(`${vniKey(1)}`, { network: "../../x" }),
    entry("/warren/v1/endpoints/blue/h1", "{}"),
  ];
  state.apply([...good, ...junk].map((e) => ({ key: e.key, next: e })));
  // The same bad value seen again (a relist) is not logged again.
  state.apply([{ key: bad.key, prev: bad, next: bad }]);
  const view = state.view();
  assertEquals([...view.networks.keys()], ["blue"]);
  assertEquals([...view.hosts.keys()], ["h1"]);
  assertEquals([...view.claims.get("blue")!.keys()], [mac(1)]);
  assertEquals(lines.length, 4, lines.join("\n"));
  assertEquals(view.invalid.size, 4);
  assert(lines.every((l) => l.startsWith("skipping /warren/v1/")), lines.join("\n"));
});

Deno.test("two networks with one VNI: the older keeps it", () => {
  const { view } = viewOf([net("first", 5), net("second", 5)]);
  assertEquals([...view.networks.keys()], ["first"]);
  assertEquals(view.conflicts, [{
    kind: "vni",
    scope: "5",
    what: "5",
    winner: "first",
    losers: ["second"],
  }]);
});

Deno.test("keys: parse what they make, and grant ranges that keep hosts apart", () => {
  assertEquals(parseKey(endpointKey("blue", "h1", mac(1))), {
    kind: "endpoint",
    net: "blue",
    host: "h1",
    mac: mac(1),
  });
  assertEquals(parseKey(networkKey("blue")), { kind: "network", net: "blue" });
  assertEquals(parseKey("/warren/v2/networks/blue"), undefined);
  assertEquals(parseKey("/warren/v1/endpoints/blue/h1"), undefined);
  // Host a's range does not hold host ab's keys.
  const start = "/warren/v1/endpoints/blue/a/";
  const end = prefixEnd(start);
  const inRange = (k: string) => k >= start && k < end;
  assert(inRange(endpointKey("blue", "a", mac(1))));
  assert(!inRange(endpointKey("blue", "ab", mac(1))));
  assert(!inRange(endpointKey("blue", "a-", mac(1))));
});

Deno.test("backoff: full jitter under an exponential cap", () => {
  const draws = [0.5, 0.999, 0.999, 0.999, 0.999, 0.999, 0.999, 0, 0.999];
  const b = new Backoff({ initialMs: 50, maxMs: 1000, random: () => draws.shift()! });
  const steps = Array.from({ length: 8 }, () => Math.round(b.next()));
  assertEquals(steps, [25, 100, 200, 400, 799, 999, 999, 0]);
  b.reset();
  assertEquals(Math.round(b.next()), 50);
});

Deno.test("throttle: a failure storm is three lines, not one per try", () => {
  let now = 0;
  const lines: string[] = [];
  const t = new Throttle((l) => lines.push(l), "watching", 60_000, () => now);
  for (let i = 0; i < 1000; i++) {
    t.failed("connection refused");
    now += 100;
  }
  t.recovered();
  assertEquals(lines, [
    "watching: connection refused; retrying",
    "watching: still failing after 601 tries in 60s: connection refused",
    "watching: recovered after 1000 failed tries in 100.0s",
  ]);
});

Deno.test("agent config: checked like etcd values, errors name the field", async () => {
  const ok = await parseAgentConfig(
    `host: h1
etcd: { endpoints: [http://127.0.0.1:2379] }
underlay: { addresses: [192.0.2.1] }
ports:
  - { name: web1, device: veth-web1, net: blue, mac: "02:00:00:00:00:01", ips: [10.1.0.1] }
`,
    "a.yaml",
  );
  assertEquals(ok.tunnels, [{ protocol: "vxlan", port: 4789 }]);
  assertEquals(ok.leaseTtl, 30);
  const bad = async (text: string, includes: string) => {
    let err: unknown;
    try {
      await parseAgentConfig(text, "a.yaml", { endpoints: ["http://x"] });
    } catch (e) {
      err = e;
    }
    assert(err instanceof ValueError && err.message.includes(includes), `${err}`);
  };
  await bad(
    "host: h1\nunderlay: { addresses: [192.0.2.1] }\nports: [{name: w, device: d, net: blue, mac: '01:00:00:00:00:01'}]",
    "a.yaml: ports[0].mac",
  );
  await bad("host: 'a/b'\nunderlay: { addresses: [192.0.2.1] }", "a.yaml: host");
  await bad("host: h\nunderlay: { addresses: [] }", "underlay.addresses");
  await bad("host: h\nunderlay: { addresses: [192.0.2.1] }\nlease_ttl: 0", "lease_ttl");
});

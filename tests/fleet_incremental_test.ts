/**
 * The incremental view and derivation against their from-scratch selves:
 * after any sequence of changes to etcd (and to this host's ports), the
 * view kept change by change equals a view built from the final keys, the
 * state derived change by change equals a derivation of that view, and the
 * differences handed on, applied in turn, give that same state.
 */

import fc from "fast-check";
import { assertEquals } from "./helpers/assert.ts";
import { applyDelta } from "./helpers/fleet.ts";
import type { Change } from "../src/fleet/mirror.ts";
import type { Entry } from "../src/fleet/client.ts";
import { derive, Deriver, type LocalPort, type SelfConfig } from "../src/fleet/derive.ts";
import { endpointKey, hostKey, networkKey, vniKey } from "../src/fleet/keys.ts";
import { OnceLog } from "../src/fleet/log.ts";
import { FleetState, type FleetView, ViewChange } from "../src/fleet/view.ts";

const NETS = ["blue", "red", "green"];
const HOSTS = ["h1", "h2", "h3", "h4"];
const MACS = ["02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"];
const IPS = ["10.0.0.1", "10.0.0.2", "fd00::1"];
const SELF = "h1";

/** One key written (a value) or deleted (none). */
type Op = { key: string; value?: string };

const arbNetwork: fc.Arbitrary<Op> = fc.record({
  key: fc.constantFrom(...NETS).map(networkKey),
  value: fc.option(
    fc.record({
      // 0 is invalid; the others collide now and then.
      vni: fc.oneof({ weight: 1, arbitrary: fc.constant(0) }, {
        weight: 9,
        arbitrary: fc.integer({ min: 1, max: 3 }),
      }),
      protocol: fc.constantFrom("vxlan", "vxlan", "geneve"),
    }).map((v) => JSON.stringify({ ...v, mtu: 1450 })),
    { nil: undefined, freq: 4 },
  ),
});

const TUNNELS = [
  [{ protocol: "vxlan" }],
  [{ protocol: "vxlan", port: 4790 }],
  [{ protocol: "geneve" }],
  [{ protocol: "vxlan" }, { protocol: "geneve" }],
];

const arbHost: fc.Arbitrary<Op> = fc.integer({ min: 0, max: HOSTS.length - 1 }).chain((i) =>
  fc.record({
    key: fc.constant(hostKey(HOSTS[i])),
    value: fc.option(
      fc.record({
        underlay: fc.oneof(
          { weight: 6, arbitrary: fc.constant([`192.0.2.${i + 1}`]) },
          { weight: 3, arbitrary: fc.subarray([`192.0.2.${i + 1}`, `2001:db8::${i + 1}`]) },
          // Not unicast: the whole registration is refused.
          { weight: 1, arbitrary: fc.constant(["224.0.0.1"]) },
        ),
        tunnels: fc.constantFrom(TUNNELS[0], ...TUNNELS),
      }).map((v) => JSON.stringify(v)),
      { nil: undefined, freq: 4 },
    ),
  })
);

const arbEndpoint: fc.Arbitrary<Op> = fc.record({
  key: fc.tuple(fc.constantFrom(...NETS), fc.constantFrom(...HOSTS), fc.constantFrom(...MACS))
    .map(([n, h, m]) => endpointKey(n, h, m)),
  value: fc.option(
    fc.oneof(
      { weight: 9, arbitrary: fc.subarray(IPS) },
      { weight: 1, arbitrary: fc.constant(["10.0.0.300"]) },
    ).map((ips) => JSON.stringify({ ips })),
    { nil: undefined },
  ),
});

const arbOp: fc.Arbitrary<Op> = fc.oneof(
  { weight: 1, arbitrary: arbNetwork },
  { weight: 1, arbitrary: fc.constant({ key: vniKey(1), value: '{"network":"blue"}' }) },
  { weight: 3, arbitrary: arbHost },
  { weight: 8, arbitrary: arbEndpoint },
);

const arbPorts: fc.Arbitrary<LocalPort[]> = fc.uniqueArray(
  fc.record({
    net: fc.constantFrom(...NETS, ...NETS, "nowhere"),
    mac: fc.constantFrom(...MACS),
    ips: fc.subarray(IPS),
  }),
  { selector: (p) => `${p.net} ${p.mac}`, minLength: 1, maxLength: 3 },
).map((ports) => ports.map((p, i) => ({ name: `w${i}`, device: `veth${i}`, ...p })));

/**
 * A batch of changes as one watch response brings them, then what the
 * agent does: derive now or later, and apply (succeeding or failing) or
 * not yet.
 */
const arbBatch = fc.record({
  ops: fc.array(arbOp, { minLength: 1, maxLength: 6 }),
  /** Also give this host other ports (a rebuild, which would hide the incremental steps if frequent). */
  ports: fc.option(arbPorts, { nil: undefined, freq: 25 }),
  derive: fc.boolean(),
  apply: fc.constantFrom("ok", "ok", "failed", "later"),
});

const arbSelf: fc.Arbitrary<SelfConfig> = fc.record({
  host: fc.constant(SELF),
  underlay: fc.constantFrom(
    ["192.0.2.1"],
    ["192.0.2.1"],
    ["2001:db8::1"],
    ["192.0.2.1", "2001:db8::1"],
  ),
  tunnels: fc.constantFrom(
    [{ protocol: "vxlan" as const, port: 4789 }],
    [{ protocol: "vxlan" as const, port: 4789 }],
    [{ protocol: "vxlan" as const, port: 4789 }, { protocol: "geneve" as const, port: 6081 }],
  ),
  ports: arbPorts,
});

/** A view's contents as plain, ordered data, to compare two views. */
function plain(view: FleetView) {
  const sorted = <V>(m: ReadonlyMap<string, V>) =>
    [...m].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0);
  const nested = <V>(m: ReadonlyMap<string, ReadonlyMap<string, V>>) =>
    sorted(m).map(([k, inner]) => [k, sorted(inner)]);
  return {
    networks: sorted(view.networks),
    hosts: sorted(view.hosts),
    claims: nested(view.claims),
    members: nested(view.members),
    conflicts: view.conflicts,
    invalid: sorted(view.invalid),
  };
}

/** Networks apart, hosts registered. */
const START: Op[] = [
  ...NETS.map((n, i) => ({
    key: networkKey(n),
    value: JSON.stringify({ vni: i + 1, protocol: i === 2 ? "geneve" : "vxlan", mtu: 1450 }),
  })),
  ...HOSTS.map((h, i) => ({
    key: hostKey(h),
    value: JSON.stringify({ underlay: [`192.0.2.${i + 1}`], tunnels: TUNNELS[0] }),
  })),
];

Deno.test("incremental view and derivation equal a from-scratch one after any sequence of changes", () => {
  fc.assert(
    fc.property(arbSelf, fc.array(arbBatch, { maxLength: 40, size: "large" }), (self0, rest) => {
      // A fleet to start from, which the batches then change.
      const batches = [{ ops: START, ports: undefined, derive: true, apply: "ok" }, ...rest];
      const entries = new Map<string, Entry>();
      const fleet = new FleetState(new OnceLog(() => {}));
      let self = self0;
      const deriver = new Deriver(self);
      deriver.rebuild(fleet.view());
      // What a datapath holds, built only from what the agent hands on.
      let applied = deriver.state();
      deriver.commit();
      const pending = new ViewChange();
      let revision = 1;
      for (const batch of batches) {
        // One revision per batch: keys created together share a create revision.
        revision++;
        const changes = new Map<string, Change>();
        for (const { key, value } of batch.ops) {
          const prev = entries.get(key);
          if (value === undefined) {
            if (!prev) continue;
            entries.delete(key);
            changes.set(key, { key, prev });
          } else {
            const next: Entry = {
              key,
              value: new TextEncoder().encode(value),
              createRevision: prev?.createRevision ?? revision,
              modRevision: revision,
              lease: "0",
            };
            entries.set(key, next);
            changes.set(key, { key, prev, next });
          }
        }
        fleet.apply([...changes.values()], pending);
        if (batch.ports) {
          self = { ...self, ports: batch.ports };
          deriver.rebuild(fleet.view(), self);
          pending.clear();
        } else if (batch.derive) {
          deriver.update(fleet.view(), pending);
          pending.clear();
        } else continue;
        // At every step, not only at the end: a later change could hide a wrong one.
        assertEquals(deriver.state(), derive(fleet.view(), self).state);
        if (batch.apply === "later") continue;
        if (batch.apply === "ok") applied = applyDelta(applied, deriver.delta());
        // A failed apply leaves the datapath unknown: the next apply is a full one.
        else applied = deriver.state();
        deriver.commit();
      }
      deriver.update(fleet.view(), pending);
      applied = applyDelta(applied, deriver.delta());

      const scratch = new FleetState(new OnceLog(() => {}));
      scratch.apply([...entries.values()].reverse().map((e) => ({ key: e.key, next: e })));
      assertEquals(plain(fleet.view()), plain(scratch.view()));
      const want = derive(scratch.view(), self);
      assertEquals(deriver.state(), want.state);
      assertEquals(deriver.problems(), want.problems);
      assertEquals(applied, want.state);
    }),
    { numRuns: 300 },
  );
});

Deno.test("a join in a large network changes its few flows and one group, not the rest", () => {
  const fleet = new FleetState(new OnceLog(() => {}));
  const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  let revision = 0;
  const put = (key: string, value: unknown): Change => ({
    key,
    next: { key, value: enc(value), createRevision: ++revision, modRevision: revision, lease: "0" },
  });
  const hostOf = (n: number) =>
    put(hostKey(`h${n}`), {
      underlay: [`198.18.${n >> 8}.${n & 255}`],
      tunnels: [{ protocol: "vxlan" }],
    });
  const macOf = (n: number) =>
    `02:10:00:00:${(n >> 8).toString(16).padStart(2, "0")}:${
      (n & 255).toString(16).padStart(2, "0")
    }`;
  const epOf = (n: number) =>
    put(endpointKey("blue", `h${n}`, macOf(n)), { ips: [`10.1.${n >> 8}.${n & 255}`] });
  const initial = [put(networkKey("blue"), { vni: 7, protocol: "vxlan", mtu: 1450 })];
  for (let n = 2; n <= 500; n++) initial.push(hostOf(n), epOf(n));
  fleet.apply(initial);
  const self: SelfConfig = {
    host: "h1",
    underlay: ["198.18.0.1"],
    tunnels: [{ protocol: "vxlan", port: 4789 }],
    ports: [{ name: "w0", device: "veth0", net: "blue", mac: macOf(1), ips: ["10.1.0.1"] }],
  };
  const deriver = new Deriver(self);
  deriver.rebuild(fleet.view());
  assertEquals(deriver.size().flows, 2 * 500 + 1);
  deriver.commit();

  deriver.update(fleet.view(), fleet.apply([hostOf(501), epOf(501)]));
  const join = deriver.delta();
  const toH501 = "set_tunnel(id=7,dst=198.18.1.245),output:fl-vxlan-4789";
  assertEquals(join.flows, {
    added: [
      `priority=100,net=7,dl_dst=${macOf(501)} actions=${toH501}`,
      `priority=200,net=7,arp,arp_op=1,arp_tpa=10.1.1.245 actions=${toH501}`,
    ],
    removed: [],
  });
  assertEquals([join.groups.added.length, join.groups.removed.length], [1, 1]);
  assertEquals(join.neighbours, { added: ["198.18.1.245"], removed: [] });
  assertEquals([join.ports, join.tunnels], [{ added: [], removed: [] }, {
    added: [],
    removed: [],
  }]);
  deriver.commit();

  // Leaving (its lease revoked): both keys go, and exactly what the join added goes with them.
  const leave = fleet.apply([
    { key: hostKey("h501"), prev: hostOf(501).next },
    { key: endpointKey("blue", "h501", macOf(501)), prev: epOf(501).next },
  ]);
  deriver.update(fleet.view(), leave);
  const left = deriver.delta();
  assertEquals(left.flows, { added: [], removed: join.flows.added });
  assertEquals(left.neighbours, { added: [], removed: join.neighbours.added });
  assertEquals(left.groups, { added: join.groups.removed, removed: join.groups.added });
});

/**
 * warren's object against its TypeScript copies, without root: the built
 * objects are opened with libbpf and never loaded (bpf_object__open_mem
 * needs no privilege), and their BTF is compared with every struct codec
 * and constant of src/maps/layouts.ts, the names of src/maps/names.ts and
 * the test-run context offsets. The last two tests prove the comparison
 * finds a drift made on either side.
 */
import { assertEquals } from "./helpers/assert.ts";
import { BpfObject } from "../src/bpf/object.ts";
import type { Btf } from "../src/bpf/btf.ts";
import * as layouts from "../src/maps/layouts.ts";
import { run } from "../src/lab/run.ts";
import { COUNTER_OBJECT, WARREN_OBJECT } from "./helpers/objects.ts";
import {
  constantDifferences,
  contextDifferences,
  headerDifferences,
  type Layouts,
  nameDifferences,
  structDifferences,
} from "./helpers/object_check.ts";

const BPF_DIR = new URL("../bpf/", import.meta.url).pathname;
const HEADER = Deno.readTextFileSync(`${BPF_DIR}include/warren.h`);

/**
 * Runs `fn` on warren's object and on counter.bpf.o, the one object that
 * holds `struct wr_counter`; both carry warren.h's enums.
 */
function withObjects<T>(
  warren: BpfObject,
  fn: (warren: BpfObject, btfs: Btf[]) => T,
): T {
  using counter = BpfObject.openMemory(COUNTER_OBJECT, "counter");
  return fn(warren, [warren.btf(), counter.btf()]);
}

function withBuilt<T>(fn: (warren: BpfObject, btfs: Btf[]) => T): T {
  using warren = BpfObject.openMemory(WARREN_OBJECT, "warren");
  return withObjects(warren, fn);
}

/** Every finding about `btfs` against `ts`. */
function differences(btfs: Btf[], ts: Layouts): string[] {
  return [
    ...structDifferences(btfs, ts),
    ...constantDifferences(btfs, ts),
    ...headerDifferences(HEADER, btfs, ts),
  ];
}

Deno.test("names.ts lists exactly the object's programs, maps and .rodata constants", () => {
  withBuilt((warren, [btf]) => assertEquals(nameDifferences(warren, btf), []));
});

Deno.test("every struct codec matches its struct in the object's BTF, member by member", () => {
  withBuilt((_, btfs) => {
    assertEquals(structDifferences(btfs, layouts), []);
    // Not vacuous: every struct of warren.h has a codec that was compared.
    const structs = [...HEADER.matchAll(/^struct (wr_\w+) \{/gm)].length - 1;
    const codecs = Object.values(layouts).filter((x) => typeof x === "object" && "fields" in x);
    assertEquals(codecs.length, structs);
  });
});

Deno.test("every constant matches its enumerator in the object's BTF; warren.h hides none", () => {
  withBuilt((_, btfs) => {
    assertEquals(constantDifferences(btfs, layouts), []);
    assertEquals(headerDifferences(HEADER, btfs, layouts), []);
  });
});

Deno.test("the test-run context offsets match struct xdp_md and struct __sk_buff", () => {
  withBuilt((_, [btf]) => assertEquals(contextDifferences(btf), []));
});

Deno.test("the check finds a constant or an offset changed on the TypeScript side", () => {
  const { PortFlag, portCodec } = layouts;
  const tos = portCodec.fields.findIndex((f) => f.name === "tos");
  const { MSS_CLAMP: _, ...fewerFlags } = PortFlag;
  withBuilt((_, btfs) => {
    assertEquals(
      differences(btfs, {
        ...layouts,
        PortFlag: { ...PortFlag, DF: 0x80 },
        portCodec: {
          ...portCodec,
          fields: portCodec.fields.map((f, i) => i === tos ? { ...f, offset: f.offset + 1 } : f),
        },
      }),
      [
        `struct wr_port: member ${tos} is tos@11+1 in the kernel, tos@12+1 in TypeScript`,
        "PortFlag.DF is 0x80, WR_PORTF_DF is 0x40 in C",
      ],
    );
    // A constant left out on either side is found too.
    assertEquals(differences(btfs, { ...layouts, PortFlag: fewerFlags, NEW_LIMIT: 7 }), [
      "PortFlag: WR_PORTF_MSS_CLAMP of enum wr_port_flag is missing",
      "NEW_LIMIT: no C enumerator is named for it (tests/helpers/object_check.ts)",
    ]);
  });
});

Deno.test("the check finds a constant or an offset changed in warren.h", async () => {
  // Rebuild the object, with the project's own Makefile, from a copy of
  // bpf/ whose warren.h sets another DF flag and swaps ttl and tos.
  const dir = await Deno.makeTempDir({ prefix: "warren-object-test-" });
  try {
    await run(["cp", "-r", `${BPF_DIR}Makefile`, `${BPF_DIR}include`, dir]);
    for (const e of Deno.readDirSync(BPF_DIR)) {
      if (e.name.endsWith(".bpf.c")) await Deno.copyFile(`${BPF_DIR}${e.name}`, `${dir}/${e.name}`);
    }
    const changed = HEADER
      .replace(/(WR_PORTF_DF\s*=\s*)0x0040/, "$10x2000")
      .replace(/(\t__u8 ttl;[^\n]*\n)(\t__u8 tos;[^\n]*\n)/, "$2$1");
    assertEquals(changed.split("\n").filter((l, i) => l !== HEADER.split("\n")[i]).length, 3);
    Deno.writeTextFileSync(`${dir}/include/warren.h`, changed);
    await run(["make", "-s", "--no-print-directory", "-C", dir, "build/warren.bpf.o"]);
    using rebuilt = BpfObject.openFile(`${dir}/build/warren.bpf.o`);
    withObjects(rebuilt, (_, btfs) => {
      assertEquals(differences(btfs, layouts), [
        "struct wr_port: member 5 is tos@10+1 in the kernel, ttl@10+1 in TypeScript",
        "struct wr_port: member 6 is ttl@11+1 in the kernel, tos@11+1 in TypeScript",
        "PortFlag.DF is 0x40, WR_PORTF_DF is 0x2000 in C",
      ]);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

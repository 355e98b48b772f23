/**
 * A real etcd for a test: one member on loopback, free ports, a throwaway
 * data directory, stopped (and its directory removed) by `close`, also when
 * the test failed. It can be stopped and started again on the same ports,
 * frozen (SIGSTOP) to make watches go silent, and restored from a snapshot
 * to send the revision backwards; with `tls` it serves HTTPS only, with
 * certificates made here by openssl, and `enableAuth` turns on etcd's
 * users and roles with a root user.
 *
 * @module
 */

import { run } from "./run.ts";
import type { EtcdOptions } from "../fleet/client.ts";

/** A port nobody listens on right now. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Certificates of a test CA: the server's and one client's per name. */
export interface TestPki {
  /** Directory holding every file. */
  dir: string;
  /** The CA certificate (PEM path). */
  ca: string;
  /** The server's certificate and key. */
  server: { cert: string; key: string };
  /** A client certificate whose CN is `name`. */
  client(name: string): Promise<{ cert: string; key: string }>;
}

async function makePki(dir: string): Promise<TestPki> {
  const p = (f: string) => `${dir}/${f}`;
  const ossl = (...args: string[]) => run(["openssl", ...args]);
  await ossl(
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-days",
    "2",
    "-subj",
    "/CN=warren test CA",
    "-keyout",
    p("ca.key"),
    "-out",
    p("ca.pem"),
  );
  const issue = async (name: string, ext: string) => {
    await Deno.writeTextFile(p(`${name}.ext`), ext);
    await ossl(
      "req",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-subj",
      `/CN=${name}`,
      "-keyout",
      p(`${name}.key`),
      "-out",
      p(`${name}.csr`),
    );
    await ossl(
      "x509",
      "-req",
      "-in",
      p(`${name}.csr`),
      "-CA",
      p("ca.pem"),
      "-CAkey",
      p("ca.key"),
      "-CAcreateserial",
      "-days",
      "2",
      "-extfile",
      p(`${name}.ext`),
      "-out",
      p(`${name}.pem`),
    );
    return { cert: p(`${name}.pem`), key: p(`${name}.key`) };
  };
  const server = await issue(
    "server",
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
  );
  return {
    dir,
    ca: p("ca.pem"),
    server,
    client: (name) => issue(`client-${name}`, "extendedKeyUsage=clientAuth\n"),
  };
}

/** Options of {@link startEtcd}. */
export interface StartEtcdOptions {
  /** Serve HTTPS with a test CA (clients must present a certificate). */
  tls?: boolean;
}

/** A running test etcd. */
export class TestEtcd {
  /** The client URL. */
  readonly url: string;
  /** The test CA, with `tls`. */
  readonly pki?: TestPki;
  #dir: string;
  #dataDir: string;
  #clientPort: number;
  #peerPort: number;
  #child?: Deno.ChildProcess;
  #rootPassword?: string;

  private constructor(dir: string, clientPort: number, peerPort: number, pki?: TestPki) {
    this.#dir = dir;
    this.#dataDir = `${dir}/data`;
    this.#clientPort = clientPort;
    this.#peerPort = peerPort;
    this.pki = pki;
    // With TLS, clients name the server (Deno's TLS takes no IP address as
    // the server name); the certificate holds both.
    this.url = pki ? `https://localhost:${clientPort}` : `http://127.0.0.1:${clientPort}`;
  }

  /** Starts a fresh etcd and waits until it answers. */
  static async start(options: StartEtcdOptions = {}): Promise<TestEtcd> {
    const dir = await Deno.makeTempDir({ prefix: "warren-etcd-" });
    try {
      const pki = options.tls ? await makePki(dir) : undefined;
      const etcd = new TestEtcd(dir, freePort(), freePort(), pki);
      await etcd.startProcess();
      return etcd;
    } catch (err) {
      await Deno.remove(dir, { recursive: true });
      throw err;
    }
  }

  get #peerUrl(): string {
    return `http://127.0.0.1:${this.#peerPort}`;
  }

  /** etcdctl's connection flags, as root once auth is on. */
  ctlArgs(): string[] {
    const args = [`--endpoints=${this.url}`, "--dial-timeout=2s", "--command-timeout=5s"];
    if (this.pki) {
      args.push(`--cacert=${this.pki.ca}`, `--cert=${this.pki.server.cert}`);
      args.push(`--key=${this.pki.server.key}`);
    }
    if (this.#rootPassword) args.push(`--user=root:${this.#rootPassword}`);
    return args;
  }

  /** Runs etcdctl (API v3) against this etcd; returns its stdout. */
  ctl(...args: string[]): Promise<string> {
    return run(["etcdctl", ...this.ctlArgs(), ...args], { env: { ETCDCTL_API: "3" } });
  }

  /** Client options for warren's fleet code, as `user` or anonymous. */
  async clientOptions(user?: { name: string; password: string }): Promise<EtcdOptions> {
    const opts: EtcdOptions = { endpoints: [this.url] };
    if (this.pki) {
      const c = await this.pki.client(user?.name ?? "anonymous");
      opts.tls = { ca: this.pki.ca, cert: c.cert, key: c.key };
    }
    if (user) opts.auth = { username: user.name, password: user.password };
    return opts;
  }

  /** Creates root with a password and turns authentication on. */
  async enableAuth(): Promise<{ name: string; password: string }> {
    const password = "root-" + crypto.randomUUID();
    await this.ctl("user", "add", `root:${password}`);
    await this.ctl("auth", "enable");
    this.#rootPassword = password;
    return { name: "root", password };
  }

  /** Starts etcd on this data directory and waits for its health. */
  async startProcess(): Promise<void> {
    const args = [
      "--name=t",
      `--data-dir=${this.#dataDir}`,
      `--listen-client-urls=${this.url.replace("localhost", "127.0.0.1")}`,
      `--advertise-client-urls=${this.url}`,
      `--listen-peer-urls=${this.#peerUrl}`,
      `--initial-advertise-peer-urls=${this.#peerUrl}`,
      `--initial-cluster=t=${this.#peerUrl}`,
      // A quick election makes start-up fast and allows short test leases.
      "--heartbeat-interval=20",
      "--election-timeout=200",
      "--logger=zap",
      "--log-level=error",
    ];
    if (this.pki) {
      args.push(`--cert-file=${this.pki.server.cert}`, `--key-file=${this.pki.server.key}`);
      args.push(`--trusted-ca-file=${this.pki.ca}`, "--client-cert-auth");
    }
    this.#child = new Deno.Command("etcd", { args, stdout: "null", stderr: "piped" }).spawn();
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        await this.ctl("endpoint", "health");
        return;
      } catch (err) {
        if (Date.now() > deadline) {
          await this.stop();
          throw new Error(`etcd did not become healthy: ${err}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Stops etcd (SIGKILL by default: what a crash does). */
  async stop(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    try {
      child.kill(signal);
    } catch {
      // Already gone.
    }
    await child.stderr.cancel();
    await child.status;
  }

  /** Freezes (SIGSTOP) or thaws (SIGCONT) the server: open connections go silent. */
  freeze(frozen: boolean): void {
    this.#child?.kill(frozen ? "SIGSTOP" : "SIGCONT");
  }

  /** Saves a snapshot of the store to a file and returns its path. */
  async snapshot(): Promise<string> {
    const path = `${this.#dir}/snap-${crypto.randomUUID()}.db`;
    await this.ctl("snapshot", "save", path);
    return path;
  }

  /**
   * Stops etcd, replaces its data with `snapshot` (as an operator restoring
   * a backup does) and starts it again on the same URL.
   */
  async restore(snapshot: string): Promise<void> {
    await this.stop();
    await Deno.remove(this.#dataDir, { recursive: true });
    await run([
      "etcdctl",
      "snapshot",
      "restore",
      snapshot,
      `--data-dir=${this.#dataDir}`,
      "--name=t",
      `--initial-cluster=t=${this.#peerUrl}`,
      `--initial-advertise-peer-urls=${this.#peerUrl}`,
    ], { env: { ETCDCTL_API: "3" } });
    await this.startProcess();
  }

  /** Stops etcd and removes its files. */
  async close(): Promise<void> {
    await this.stop();
    await Deno.remove(this.#dir, { recursive: true });
  }

  /** Stops etcd and removes its files. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

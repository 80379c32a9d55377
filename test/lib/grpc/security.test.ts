/**
 * TLS, mutual TLS and bearer tokens with real servers on loopback; certificates are made for the test by openssl.
 * Run: node --import tsx --test test/lib/grpc/security.test.ts
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { PreferenceOracle } from "../../../gen/sppo/v1/oracle_pb.js";
import { Code, type RpcError } from "../../../lib/errors.js";
import { createClient } from "../../../lib/grpc/client.js";
import { mount, type RunningServer } from "../../../lib/grpc/serve.js";
import { serveForTest } from "./harness.js";

const dir = mkdtempSync(join(tmpdir(), "sppo-tls-"));
const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
const file = (name: string) => join(dir, name);

/** A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA. */
function makeCertificates(): void {
  openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=sppo test CA", "-keyout", "ca.key", "-out", "ca.crt");
  writeFileSync(file("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  for (const who of ["server", "client"]) {
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", `/CN=sppo test ${who}`, "-keyout", `${who}.key`, "-out", `${who}.csr`);
    openssl("x509", "-req", "-in", `${who}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-out", `${who}.crt`, ...(who === "server" ? ["-extfile", "server.ext"] : []));
  }
  // A second CA that signed nothing here: trusting it must not be enough.
  openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other CA", "-keyout", "other.key", "-out", "other.crt");
}
makeCertificates();

const oracle = mount(PreferenceOracle, {
  async describe() {
    return { backend: "secure-test", maxCandidates: 2 };
  },
  async *compare(requests) {
    for await (const r of requests) yield { requestId: r.requestId, k: 2, probabilities: [0.5, 0.5, 0.5, 0.5] };
  },
});

const servers: RunningServer[] = [];
after(async () => Promise.all(servers.map((s) => s.shutdown(0))));

const rejectsWith = (promise: Promise<unknown>, code: Code, pattern?: RegExp) =>
  assert.rejects(promise, (err: RpcError) => {
    assert.equal(err.code, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });

describe("TLS, mTLS and bearer tokens", () => {
  it("serves over TLS to clients that trust the CA, and not to others", async () => {
    const server = await serveForTest([oracle], { tls: { certFile: file("server.crt"), keyFile: file("server.key") } });
    servers.push(server);
    const target = `127.0.0.1:${server.port}`;
    const trusted = createClient(PreferenceOracle, target, { tls: { caFile: file("ca.crt") } });
    assert.equal((await trusted.describe({})).backend, "secure-test");
    const stranger = createClient(PreferenceOracle, target, { tls: { caFile: file("other.crt") }, maxAttempts: 1 });
    await rejectsWith(stranger.describe({}, { deadlineMs: 3_000 }), Code.UNAVAILABLE);
    const plain = createClient(PreferenceOracle, target, { maxAttempts: 1 });
    await rejectsWith(plain.describe({}, { deadlineMs: 3_000 }), Code.UNAVAILABLE);
    for (const c of [trusted, stranger, plain]) c.close();
  });

  it("with a client CA, accepts only clients presenting a certificate it signed (mTLS)", async () => {
    const server = await serveForTest([oracle], { tls: { certFile: file("server.crt"), keyFile: file("server.key"), clientCaFile: file("ca.crt") } });
    servers.push(server);
    const target = `127.0.0.1:${server.port}`;
    const withCert = createClient(PreferenceOracle, target, { tls: { caFile: file("ca.crt"), certFile: file("client.crt"), keyFile: file("client.key") } });
    assert.equal((await withCert.describe({})).backend, "secure-test");
    const answers: string[] = [];
    for await (const r of withCert.compare([{ requestId: "m", candidates: ["a", "b"] }])) answers.push(r.requestId);
    assert.deepEqual(answers, ["m"]);
    const withoutCert = createClient(PreferenceOracle, target, { tls: { caFile: file("ca.crt") }, maxAttempts: 1 });
    await rejectsWith(withoutCert.describe({}, { deadlineMs: 3_000 }), Code.UNAVAILABLE);
    withCert.close();
    withoutCert.close();
  });

  it("checks a bearer token on every call, unary and streaming, and names what was wrong", async () => {
    const token = "s3cret-token-for-tests-0123456789";
    const server = await serveForTest([oracle], { authToken: token });
    servers.push(server);
    const target = `127.0.0.1:${server.port}`;
    const good = createClient(PreferenceOracle, target, { authToken: token });
    assert.equal((await good.describe({})).backend, "secure-test");
    const ids: string[] = [];
    for await (const r of good.compare([{ requestId: "t", candidates: ["a", "b"] }])) ids.push(r.requestId);
    assert.deepEqual(ids, ["t"]);

    const none = createClient(PreferenceOracle, target);
    await rejectsWith(none.describe({}), Code.UNAUTHENTICATED, /missing bearer token/);
    await rejectsWith(
      (async () => {
        for await (const _ of none.compare([{ requestId: "x", candidates: ["a", "b"] }])) {
          // none
        }
      })(),
      Code.UNAUTHENTICATED,
      /Compare: .*missing bearer token/,
    );
    const tokenFile = file("wrong.token");
    writeFileSync(tokenFile, "not-the-token-at-all-000000000000\n");
    const wrong = createClient(PreferenceOracle, target, { authTokenFile: tokenFile });
    await rejectsWith(wrong.describe({}), Code.UNAUTHENTICATED, /wrong bearer token/);
    for (const c of [good, none, wrong]) c.close();
  });

  it("refuses a token given twice or a missing token file at start-up", async () => {
    await assert.rejects(serveForTest([oracle], { authToken: "a".repeat(16), authTokenFile: file("x") }), /authToken or authTokenFile, not both/);
    await assert.rejects(serveForTest([oracle], { authTokenFile: file("missing.token") }), /server\.authTokenFile .*missing\.token/);
  });
});

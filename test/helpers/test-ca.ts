/**
 * A throwaway certificate authority for TLS tests, made with the openssl CLI (EC P-256, so it
 * takes about 0.1 s): a CA, and a server certificate for 127.0.0.1 (SAN IP:127.0.0.1,
 * DNS:localhost) signed by it. `certDir` holds only `ca.crt`, the layout skopeo's
 * `--cert-dir`/`--src-cert-dir`/`--dest-cert-dir` expects; curl takes `--cacert caCert`.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execBounded, succeeded } from './sandbox.js';

export interface TestCa {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  /** A directory with ca.crt only (skopeo --cert-dir). */
  certDir: string;
}

async function openssl(args: string[]): Promise<void> {
  await succeeded(execBounded('openssl', args, { timeoutMs: 10_000 }), 'openssl', args);
}

export async function makeTestCa(dir: string): Promise<TestCa> {
  mkdirSync(dir, { recursive: true });
  const p = (f: string) => join(dir, f);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await openssl(['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '2', '-subj', '/CN=smd test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  await openssl(['req', ...ec, '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=127.0.0.1']);
  writeFileSync(p('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n');
  await openssl(['x509', '-req', '-in', p('server.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-set_serial', '1', '-days', '2',
    '-extfile', p('server.ext'), '-out', p('server.crt')]);
  const certDir = p('certs.d');
  mkdirSync(certDir, { recursive: true });
  copyFileSync(p('ca.crt'), join(certDir, 'ca.crt'));
  return { dir, caCert: p('ca.crt'), caKey: p('ca.key'), serverCert: p('server.crt'), serverKey: p('server.key'), certDir };
}

/** A self-signed EC P-256 certificate and key (e.g. a token issuer's signing key). */
export async function makeSelfSigned(dir: string, name: string, cn: string): Promise<{ cert: string; key: string }> {
  mkdirSync(dir, { recursive: true });
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${cn}`]);
  return { cert, key };
}

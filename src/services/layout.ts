import { createHash } from 'node:crypto';
import { join } from 'node:path';

/**
 * Where a service's pieces live:
 *   <dataDir>/services/<id>/                      the service directory (services.path)
 *   <dataDir>/storage/<usersKey>/<id>/data        the users' storage folder, /data in the service
 *   <dataDir>/storage/<usersKey>/<id>/state/state  the users' state file, /state/state in the service
 *   <dataDir>/storage/<usersKey>/<id>/upper-v<N>  overlay upper directory of version N (+ work-v<N>)
 *   <runDir>/services/<id>/root                   the mounted root file system (RootDirectory=)
 */
export class ServiceLayout {
  constructor(
    readonly dataDir: string,
    readonly runDir: string,
  ) {}

  serviceDir(id: string): string {
    return join(this.dataDir, 'services', id);
  }

  servicesRoot(): string {
    return join(this.dataDir, 'services');
  }

  rootDir(id: string): string {
    return join(this.runDir, 'services', id, 'root');
  }

  mountsRoot(): string {
    return join(this.runDir, 'services');
  }

  storageRoot(): string {
    return join(this.dataDir, 'storage');
  }

  storageDir(usersKey: string, id: string): string {
    return join(this.dataDir, 'storage', usersKey, id);
  }

  dataDirOf(usersKey: string, id: string): string {
    return join(this.storageDir(usersKey, id), 'data');
  }

  stateDirOf(usersKey: string, id: string): string {
    return join(this.storageDir(usersKey, id), 'state');
  }

  /** The state file whose checksum smd keeps in users.stateCheckSum. */
  stateFileOf(usersKey: string, id: string): string {
    return join(this.stateDirOf(usersKey, id), 'state');
  }

  upperDir(usersKey: string, id: string, version: number): string {
    return join(this.storageDir(usersKey, id), `upper-v${version}`);
  }

  workDir(usersKey: string, id: string, version: number): string {
    return join(this.storageDir(usersKey, id), `work-v${version}`);
  }
}

/** Claims are a set: the canonical form is the sorted, de-duplicated JSON array. */
export function canonicalUsers(claims: readonly string[]): string {
  return JSON.stringify([...new Set(claims)].sort());
}

/** A short, file-system-safe key for a set of claims. */
export function usersKey(canonical: string): string {
  return createHash('sha256').update(canonical).digest('hex').slice(0, 16);
}

export const SERVICE_ID = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

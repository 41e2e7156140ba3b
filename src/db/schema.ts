/**
 * The database schema. The five tables of the original design (config, services, users,
 * trafficmonitor, layers) keep their names and columns; smd adds columns and tables.
 * Timestamps are integer milliseconds since the epoch everywhere. Tables a client can change
 * carry createdAt, updatedAt and rowVersion (bumped on each real change).
 * Changing this file means `npm run db:generate`: never edit an applied migration.
 */
import { sqliteTable, text, integer, blob, primaryKey, index, uniqueIndex } from 'drizzle-orm/sqlite-core';

const stamps = {
  createdAt: integer('createdAt').notNull().default(0),
  updatedAt: integer('updatedAt').notNull().default(0),
};
const rowVersion = integer('rowVersion').notNull().default(1);

/** One row: the OS version, the journal cursor, and the current users' claims. */
export const config = sqliteTable('config', {
  version: integer('version'),
  cursor: text('cursor'),
  currentUsers: text('currentUsers').notNull().default('[]'),
  ...stamps,
  rowVersion,
});

export const services = sqliteTable(
  'services',
  {
    id: text('id').primaryKey(),
    version: integer('version'),
    serviceProvider: text('serviceProvider'),
    path: text('path'),
    unit: text('unit'),
    user: text('user'),
    hostname: text('hostname'),
    permissions: text('permissions'),
    state: integer('state'),
    status: integer('status'),
    startat: integer('startat'),
    ttl: integer('ttl'),
    alertRules: text('alertRules'),
    ulLimit: integer('ulLimit'),
    dlLimit: integer('dlLimit'),
    ulSpeed: integer('ulSpeed'),
    dlSpeed: integer('dlSpeed'),
    storageLimit: integer('storageLimit'),
    stateLimit: integer('stateLimit'),
    layerList: text('layerList'),
    deviceResources: text('deviceResources'),
    // Added by smd.
    uid: integer('uid'),
    /** Settings with no column of their own (memoryMax, cpuQuota, tasksMax, env), JSON. */
    settings: text('settings').notNull().default('{}'),
    /** The image config the unit runs (entrypoint, cmd, env, workingDir, user), JSON. */
    imageConfig: text('imageConfig').notNull().default('{}'),
    /** What the operator asked for: 'running' or 'stopped'; reconciliation restores it. */
    desired: text('desired').notNull().default('running'),
    /** Id of the trusted key (images.trust.keys) whose signature the installed image carried; null when unsigned (SPEC 13). */
    signedBy: text('signedBy'),
    /** Network policy settings (exposedPorts, trafficRules, egress, dnsRules, nameservers), JSON; null when none (SPEC 5). */
    networkPolicy: text('networkPolicy'),
    ...stamps,
    rowVersion,
  },
  (t) => [uniqueIndex('services_uid_unique').on(t.uid)],
);

export const users = sqliteTable(
  'users',
  {
    users: text('users').notNull(),
    serviceid: text('serviceid').notNull(),
    storageFolder: text('storageFolder'),
    stateCheckSum: blob('stateCheckSum', { mode: 'buffer' }),
    ...stamps,
    rowVersion,
  },
  (t) => [primaryKey({ columns: [t.users, t.serviceid] }), index('users_serviceid').on(t.serviceid)],
);

export const trafficmonitor = sqliteTable('trafficmonitor', {
  chain: text('chain').primaryKey(),
  time: integer('time'),
  value: integer('value'),
  // Added by smd.
  serviceId: text('serviceId'),
  direction: text('direction'),
  periodStart: integer('periodStart'),
  /** The kernel counter `value` corresponds to (decimal, may exceed 2^53): a restart resumes from it. */
  counter: text('counter'),
  ...stamps,
});

export const layers = sqliteTable('layers', {
  digest: text('digest').primaryKey(),
  layerId: text('layerId'),
  path: text('path'),
  osVersion: text('osVersion'),
  // Added by smd.
  size: integer('size').notNull().default(0),
  mediaType: text('mediaType'),
  ...stamps,
  rowVersion,
});

export const operations = sqliteTable(
  'operations',
  {
    id: text('id').primaryKey(),
    kind: text('kind').notNull(),
    target: text('target'),
    state: text('state', { enum: ['pending', 'running', 'succeeded', 'failed'] }).notNull(),
    progress: integer('progress').notNull().default(0),
    step: text('step'),
    /** `{code, message, details?}` when failed, JSON. */
    error: text('error'),
    inputs: text('inputs').notNull().default('{}'),
    result: text('result'),
    createdAt: integer('createdAt').notNull(),
    updatedAt: integer('updatedAt').notNull(),
  },
  (t) => [index('operations_state').on(t.state), index('operations_created').on(t.createdAt)],
);

export const operationSteps = sqliteTable(
  'operation_steps',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    operationId: text('operationId')
      .notNull()
      .references(() => operations.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    state: text('state', { enum: ['running', 'succeeded', 'failed'] }).notNull(),
    progress: integer('progress').notNull().default(0),
    message: text('message'),
    time: integer('time').notNull(),
  },
  (t) => [index('operation_steps_op').on(t.operationId)],
);

export const alerts = sqliteTable(
  'alerts',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    time: integer('time').notNull(),
    source: text('source').notNull(),
    serviceId: text('serviceId'),
    kind: text('kind').notNull(),
    message: text('message').notNull(),
    payload: text('payload').notNull().default('{}'),
  },
  (t) => [index('alerts_time').on(t.time), index('alerts_service').on(t.serviceId)],
);

/** The address each service has on smd's bridge: allocated once, stable, released on removal. */
export const serviceNetworks = sqliteTable('service_networks', {
  serviceId: text('serviceId').primaryKey(),
  address: text('address').notNull().unique(),
  createdAt: integer('createdAt').notNull(),
});

/**
 * The desired state (SPEC section 12): one row per apply that ran, newest last. `state` says
 * what the device ended in: `running` while it runs, `succeeded` once every item held (also when
 * start-up recovery finished a committed apply), `failed` when nothing of it stayed. The layer
 * digests of the last succeeded apply (and of a running one) are kept by layer prunes.
 * No foreign key to operations: their retention must not delete the device's desired state.
 */
export const desiredState = sqliteTable(
  'desired_state',
  {
    operationId: text('operationId').primaryKey(),
    version: integer('version').notNull(),
    /** sha256 of the canonical JSON of the desired state: the same version with other content is told apart. */
    hash: text('hash').notNull(),
    desired: text('desired').notNull(),
    state: text('state', { enum: ['running', 'succeeded', 'failed'] }).notNull(),
    /** Per item what was done, JSON. */
    items: text('items').notNull().default('[]'),
    layerDigests: text('layerDigests').notNull().default('[]'),
    /** `{code, message}` when failed, JSON. */
    error: text('error'),
    finishedAt: integer('finishedAt'),
    ...stamps,
  },
  (t) => [index('desired_state_created').on(t.createdAt), index('desired_state_state').on(t.state)],
);

/**
 * The fleet bridge's outbox (SPEC 14): what must reach the broker (reports, events, rpc replies),
 * kept here while it is unreachable and sent in `id` order once connected; a row goes when the
 * broker acknowledged it (QoS 1). Bounded: see src/fleet/outbox.ts for the drop policy.
 */
export const fleetOutbox = sqliteTable(
  'fleet_outbox',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    kind: text('kind', { enum: ['report', 'event', 'reply'] }).notNull(),
    /** The topic below `<topicPrefix>/<deviceId>/`: `reported`, `events` or `rpc/reply`. */
    topic: text('topic').notNull(),
    payload: text('payload').notNull(),
    retain: integer('retain', { mode: 'boolean' }).notNull().default(false),
    createdAt: integer('createdAt').notNull(),
  },
  (t) => [index('fleet_outbox_kind').on(t.kind, t.id)],
);

export { SystemdManager, type SystemdManagerOptions, unitObjectPath, unitNameFromPath } from './manager.js';
export type { SystemdAdapter, SystemdEvents, SystemdHealth, UnitChange, UnitState, UnitView, JobOutcome, JobResult } from './types.js';
export { renderUnit, unitNameFor, HARDENING, type UnitSpec, type BindMount, type DeviceRule, type RestartPolicy, type ServiceType } from './unit.js';

import 'reflect-metadata';

export { Cells } from './cells';
export type { CellsLogEvent, CellsOptions, CellsStats } from './cells-options';
export type { RequireSchema } from './schema-gate';
export type { TelemetryMeterProvider, TelemetryOptions, TelemetryTracerProvider } from './telemetry-options';
export type { ReplicaEvent } from './cell-readers';
export type { MaxConnectionsPerServer, ServerBudgetStats } from './server-budget';
export type { CellDataSourceOptions, DatabaseConfig, DatabaseOptions, MysqlOptions, PostgresOptions } from './data-source-options';
export type { Engine } from './connection-url';
export {
  RequestContext,
  bindContext,
  getContext,
  readFromPrimary,
  readFromReplica,
  runWithContext,
  setTargetCell,
  targetCell,
  tryGetContext,
} from './context';
export type { CellRef, ReadDeleted, ReadFrom, RequestContextInit } from './context';
export {
  BadConnectionUrlError,
  CellBusyError,
  CellDisabledError,
  CellInUseError,
  CellReadOnlyError,
  CellSwitchInTransactionError,
  CellUnreachableError,
  CellsError,
  CellsNotReadyError,
  DuplicateMappingError,
  MappingWriteConflictError,
  IncompatibleEntityError,
  InvalidArgumentError,
  MigrationLockTimeoutError,
  MissingDriverError,
  NoContextError,
  NoTargetCellError,
  QueryTimeoutError,
  ScatterGatherAbortedError,
  SchemaBehindError,
  SchemaUnreadableError,
  SecretResolutionError,
  ServerBusyError,
  UnknownCellError,
  UnknownHostError,
  UnknownInstanceError,
} from './errors';
export {
  CanaryFailedError,
  CellVerificationError,
  ConfigFileError,
  FleetRunBusyError,
  InvalidMigrationRunError,
  MigrationInterruptedError,
  SomeCellsFailedError,
} from './cli/errors';
export { maskSecrets, redactUrl } from './connection-url';
export type { ResolveSecret, SecretOwner, SecretReference } from './secret-reference';
export type { DatabaseSelector } from './repository';
export { CellMappings } from './mappings';
export type {
  AllCellsOptions,
  CellMappingInit,
  CellMappingPatch,
  CellMappingsOptions,
  InstanceMappingInit,
} from './mappings';
export type { MappingCacheOptions, MappingCacheStats } from './mapping-cache';
export { DidNotRespond, RaisedError, isCellFailure } from './scatter';
export type {
  CellResult,
  CellTask,
  ScatterGatherAllOptions,
  ScatterGatherOptions,
  ScatterGatherResult,
} from './scatter';
export { CELL0_UUID, CELL_STATES, CellMapping, HostMapping, InstanceMapping, MigrationRun, MigrationRunCell } from '../entities';
export type { CellState, MigrationRunCellState, MigrationRunOptions, MigrationRunState } from '../entities';
export { API_MIGRATIONS } from '../migrations';

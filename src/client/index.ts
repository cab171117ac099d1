// The client library's public surface (SPEC CLU6): what daemons, the gateway
// wiring and the simulation import. See each module's header for invariants.
export type { OsdAddress, OsdTransport } from './transport.js';
export { MapCache, type MapCacheOptions, type MapListener, type ClientLogFn } from './map-cache.js';
export { ClusterClient, type ClusterClientOptions, type ClientCounters, type VolumeRef } from './client.js';
export { ClusterVolumeStore, ClusterVolume, type ClusterVolumeStoreOptions, type ClusterVolumeStoreParts } from './volume-store.js';

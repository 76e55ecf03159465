/** The multipath modules' public names, gathered so index.ts needs one export block. */

export {
  type MultipathEvents,
  type MultipathOptions,
  type MultipathPathSpec,
  type MultipathPathStats,
  type MultipathSendOptions,
  type MultipathSendResult,
  MultipathSession,
  type MultipathStats,
} from './multipath.js';
export {
  decodeMultipathFrame,
  encodeMultipathFrame,
  MULTIPATH_HEADER_SIZE,
  MULTIPATH_STREAM_ID_SIZE,
  MULTIPATH_VERSION,
  type MultipathFrame,
} from './multipath-frame.js';
export {
  MultipathInbound,
  type MultipathInboundOptions,
  type MultipathInboundStats,
  type MultipathMessage,
} from './multipath-inbound.js';
export { MULTIPATH_STRATEGIES, type MultipathStrategy, PathScheduler, type PathView } from './multipath-scheduler.js';
export { ReorderBuffer, type ReorderOptions, type ReorderStats, type ReorderTimers } from './reorder.js';

/** The relay logs like every service: shared/src/log.ts. */
export { createLogger, type Logger, type LogLevel, silentLogger } from '@libertaria/shared';

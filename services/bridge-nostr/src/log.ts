/** The bridge logs like every service (the relay's shape): shared/src/log.ts. */
export { createLogger, type Logger, type LogLevel, silentLogger } from '@libertaria/shared';

/** The relay logs like every service: shared/log (@libertaria/log). */
export { createLogger, type Logger, type LogLevel, silentLogger } from '@libertaria/log';

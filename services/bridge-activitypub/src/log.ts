/** The bridge logs like every service (the relay's shape): shared/log (@libertaria/log). */
export { createLogger, type Logger, type LogLevel, silentLogger } from '@libertaria/log';

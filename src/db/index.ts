export { openDatabase, filePathOf, MIGRATIONS_DIR, type Database, type Orm } from './client.js';
export { openNative, prepare, BUSY_TIMEOUT_MS, type NativeDb, type Stmt } from './native.js';
export { escapeLike, isoTime, keysetPage, placeholders } from './sql.js';

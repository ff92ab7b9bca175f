export { openDatabase, filePathOf, BUSY_TIMEOUT_MS, MIGRATIONS_DIR, type Database, type Orm } from './client.js';
export { openNative, prepare, type NativeDb, type Stmt } from './native.js';
export { escapeLike, placeholders } from './sql.js';

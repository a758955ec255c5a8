// A thin C layer over SQLite's session extension (https://sqlite.org/sessionintro.html).
//
// The system libsqlite3 (Debian) is built with SQLITE_ENABLE_SESSION and
// SQLITE_ENABLE_PREUPDATE_HOOK, but <sqlite3.h> declares the session API only when those
// macros are defined. This header does not include <sqlite3.h> (GRDB's module already owns it):
// it declares the handful of calls flippio needs with incomplete struct types, which Swift
// imports as `OpaquePointer`, so GRDB's `db.sqliteConnection` can be passed as is.
// The implementation file defines the macros and includes <sqlite3.h>.
#ifndef CSQLITESESSION_H
#define CSQLITESESSION_H

struct sqlite3;
struct sqlite3_session;
struct sqlite3_changeset_iter;
struct sqlite3_value;

// Result codes flippio looks at (the same values as in <sqlite3.h>).
enum {
    FL_SQLITE_OK = 0,
    FL_SQLITE_ROW = 100,
    FL_SQLITE_DONE = 101,
};

// Operations (SQLITE_INSERT, SQLITE_DELETE, SQLITE_UPDATE).
enum { FL_OP_INSERT = 18, FL_OP_DELETE = 9, FL_OP_UPDATE = 23 };

// Conflict kinds passed to the conflict handler (SQLITE_CHANGESET_*).
enum {
    FL_CHANGESET_DATA = 1,
    FL_CHANGESET_NOTFOUND = 2,
    FL_CHANGESET_CONFLICT = 3,
    FL_CHANGESET_CONSTRAINT = 4,
    FL_CHANGESET_FOREIGN_KEY = 5,
};

// What the conflict handler returns.
enum { FL_CHANGESET_OMIT = 0, FL_CHANGESET_REPLACE = 1, FL_CHANGESET_ABORT = 2 };

// Value types (SQLITE_INTEGER ... SQLITE_NULL).
enum { FL_INTEGER = 1, FL_FLOAT = 2, FL_TEXT = 3, FL_BLOB = 4, FL_NULL = 5 };

// MARK: sessions

int fl_session_create(struct sqlite3 *db, const char *schema, struct sqlite3_session **session);
int fl_session_attach(struct sqlite3_session *session, const char *table);
/// Records in `session` the changes that turn `fromSchema.table` into the session's `schema.table`.
/// On error `*errorMessage` may be set; free it with `fl_free`.
int fl_session_diff(struct sqlite3_session *session, const char *fromSchema, const char *table, char **errorMessage);
/// The changeset; free `*buffer` with `fl_free`.
int fl_session_changeset(struct sqlite3_session *session, int *size, void **buffer);
void fl_session_delete(struct sqlite3_session *session);
void fl_free(void *pointer);

// MARK: applying

/// The conflict handler: `context` is the pointer given to `fl_changeset_apply`.
typedef int (*fl_conflict_handler)(void *context, int conflict, struct sqlite3_changeset_iter *iterator);

/// `sqlite3changeset_apply_v2` without a table filter (every table of the changeset is applied).
int fl_changeset_apply(struct sqlite3 *db, int size, const void *buffer,
                       fl_conflict_handler handler, void *context);

/// `sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, enabled, &previous)`; returns the previous setting.
int fl_db_set_triggers_enabled(struct sqlite3 *db, int enabled);

int fl_changeset_invert(int size, const void *buffer, int *outSize, void **outBuffer);
int fl_changeset_concat(int sizeA, const void *bufferA, int sizeB, const void *bufferB, int *outSize, void **outBuffer);

// MARK: iterating

int fl_changeset_start(struct sqlite3_changeset_iter **iterator, int size, void *buffer);
int fl_changeset_next(struct sqlite3_changeset_iter *iterator);
/// Table name (valid until the next call to `fl_changeset_next`), column count and operation.
int fl_changeset_op(struct sqlite3_changeset_iter *iterator, const char **table, int *columnCount, int *operation);
/// `(*primaryKey)[i]` is non-zero for the primary-key columns.
int fl_changeset_pk(struct sqlite3_changeset_iter *iterator, unsigned char **primaryKey, int *columnCount);
/// Old / new / conflicting value of column `column`; `*value` is NULL when the change does not carry it.
int fl_changeset_old(struct sqlite3_changeset_iter *iterator, int column, struct sqlite3_value **value);
int fl_changeset_new(struct sqlite3_changeset_iter *iterator, int column, struct sqlite3_value **value);
int fl_changeset_conflict(struct sqlite3_changeset_iter *iterator, int column, struct sqlite3_value **value);
int fl_changeset_finalize(struct sqlite3_changeset_iter *iterator);

// MARK: values

int fl_value_type(struct sqlite3_value *value);
long long fl_value_int64(struct sqlite3_value *value);
double fl_value_double(struct sqlite3_value *value);
/// Bytes of a TEXT or BLOB value (`fl_value_bytes` long); NULL for an empty blob.
const void *fl_value_blob(struct sqlite3_value *value);
const unsigned char *fl_value_text(struct sqlite3_value *value);
int fl_value_bytes(struct sqlite3_value *value);

const char *fl_errmsg(struct sqlite3 *db);

// MARK: the main database file, through SQLite's own handle

/// Reads `amount` bytes at `offset` of the "main" database file of `db` through the VFS's `xRead`
/// on the connection's own file handle (`SQLITE_FCNTL_FILE_POINTER`): no second descriptor, so
/// no POSIX lock of the process is dropped. Returns FL_SQLITE_OK, FL_SQLITE_IOERR_SHORT_READ (the
/// rest of the buffer zeroed), or another SQLite error code.
int fl_main_file_read(struct sqlite3 *db, void *buffer, int amount, long long offset);
/// The size in bytes of the "main" database file of `db`, through the same handle.
int fl_main_file_size(struct sqlite3 *db, long long *size);
/// `SQLITE_VERSION_NUMBER` of the library linked (what SQLite writes at offset 96 of a file).
int fl_libversion_number(void);

enum { FL_SQLITE_IOERR_SHORT_READ = 522 };

#endif

// The session API is declared by <sqlite3.h> only when these are defined; the system library
// (Debian's libsqlite3) is built with both.
#define SQLITE_ENABLE_SESSION 1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include <sqlite3.h>
#include "CSQLiteSession.h"

int fl_session_create(sqlite3 *db, const char *schema, sqlite3_session **session) {
    return sqlite3session_create(db, schema, session);
}

int fl_session_attach(sqlite3_session *session, const char *table) {
    return sqlite3session_attach(session, table);
}

int fl_session_diff(sqlite3_session *session, const char *fromSchema, const char *table, char **errorMessage) {
    return sqlite3session_diff(session, fromSchema, table, errorMessage);
}

int fl_session_changeset(sqlite3_session *session, int *size, void **buffer) {
    return sqlite3session_changeset(session, size, buffer);
}

void fl_session_delete(sqlite3_session *session) { sqlite3session_delete(session); }

void fl_free(void *pointer) { sqlite3_free(pointer); }

int fl_changeset_apply(sqlite3 *db, int size, const void *buffer, fl_conflict_handler handler, void *context) {
    // The handler's signature matches xConflict: (void *, int eConflict, sqlite3_changeset_iter *).
    return sqlite3changeset_apply_v2(db, size, (void *)buffer, 0,
                                     (int (*)(void *, int, sqlite3_changeset_iter *))handler, context,
                                     0, 0, 0);
}

int fl_db_set_triggers_enabled(sqlite3 *db, int enabled) {
    int previous = -1;
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, enabled, &previous);
    return previous;
}

int fl_changeset_invert(int size, const void *buffer, int *outSize, void **outBuffer) {
    return sqlite3changeset_invert(size, buffer, outSize, outBuffer);
}

int fl_changeset_concat(int sizeA, const void *bufferA, int sizeB, const void *bufferB, int *outSize, void **outBuffer) {
    return sqlite3changeset_concat(sizeA, (void *)bufferA, sizeB, (void *)bufferB, outSize, outBuffer);
}

int fl_changeset_start(sqlite3_changeset_iter **iterator, int size, void *buffer) {
    return sqlite3changeset_start(iterator, size, buffer);
}

int fl_changeset_next(sqlite3_changeset_iter *iterator) { return sqlite3changeset_next(iterator); }

int fl_changeset_op(sqlite3_changeset_iter *iterator, const char **table, int *columnCount, int *operation) {
    int indirect = 0;
    return sqlite3changeset_op(iterator, table, columnCount, operation, &indirect);
}

int fl_changeset_pk(sqlite3_changeset_iter *iterator, unsigned char **primaryKey, int *columnCount) {
    return sqlite3changeset_pk(iterator, primaryKey, columnCount);
}

int fl_changeset_old(sqlite3_changeset_iter *iterator, int column, sqlite3_value **value) {
    return sqlite3changeset_old(iterator, column, value);
}

int fl_changeset_new(sqlite3_changeset_iter *iterator, int column, sqlite3_value **value) {
    return sqlite3changeset_new(iterator, column, value);
}

int fl_changeset_conflict(sqlite3_changeset_iter *iterator, int column, sqlite3_value **value) {
    return sqlite3changeset_conflict(iterator, column, value);
}

int fl_changeset_finalize(sqlite3_changeset_iter *iterator) { return sqlite3changeset_finalize(iterator); }

int fl_value_type(sqlite3_value *value) { return sqlite3_value_type(value); }
long long fl_value_int64(sqlite3_value *value) { return sqlite3_value_int64(value); }
double fl_value_double(sqlite3_value *value) { return sqlite3_value_double(value); }
const void *fl_value_blob(sqlite3_value *value) { return sqlite3_value_blob(value); }
const unsigned char *fl_value_text(sqlite3_value *value) { return sqlite3_value_text(value); }
int fl_value_bytes(sqlite3_value *value) { return sqlite3_value_bytes(value); }

const char *fl_errmsg(sqlite3 *db) { return sqlite3_errmsg(db); }

// MARK: the main database file

static sqlite3_file *fl_main_file(sqlite3 *db) {
    sqlite3_file *file = 0;
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &file) != SQLITE_OK) return 0;
    if (file == 0 || file->pMethods == 0) return 0;
    return file;
}

int fl_main_file_read(sqlite3 *db, void *buffer, int amount, long long offset) {
    sqlite3_file *file = fl_main_file(db);
    if (file == 0) return SQLITE_MISUSE;
    return file->pMethods->xRead(file, buffer, amount, offset);
}

int fl_main_file_size(sqlite3 *db, long long *size) {
    sqlite3_file *file = fl_main_file(db);
    if (file == 0) return SQLITE_MISUSE;
    sqlite3_int64 value = 0;
    int rc = file->pMethods->xFileSize(file, &value);
    *size = value;
    return rc;
}

int fl_libversion_number(void) { return sqlite3_libversion_number(); }

-- An outbox written by schema version 3: an AMI journal with a clock and a frame entry.
-- Loaded by test_outbox_schema.py.
BEGIN TRANSACTION;
CREATE TABLE ami_journal (
        seq  INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('frame', 'resync', 'clock')),
        data BLOB NOT NULL,
        at   REAL
    );
INSERT INTO "ami_journal" VALUES(1,'clock',X'',1764000000.5);
INSERT INTO "ami_journal" VALUES(2,'frame',X'4576656E743A204E65776368616E6E656C0D0A556E6971756569643A20313736343030303030312E300D0A0D0A',NULL);
CREATE TABLE outbox (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT    NOT NULL UNIQUE,
        kind       TEXT    NOT NULL,
        topic      TEXT    NOT NULL,
        payload    BLOB    NOT NULL,
        direction  TEXT,
        answered   INTEGER,
        created_at REAL    NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        sent_at    REAL
    , expires_at REAL, status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'expired')));
CREATE TABLE tracker_state (
        name       TEXT PRIMARY KEY,
        state      BLOB NOT NULL,
        updated_at REAL NOT NULL
    );
CREATE INDEX outbox_pending ON outbox (seq) WHERE status = 'pending';
CREATE INDEX outbox_done ON outbox (sent_at) WHERE status != 'pending';
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('ami_journal',2);
COMMIT;
PRAGMA user_version = 3;
PRAGMA application_id = 1885498475;

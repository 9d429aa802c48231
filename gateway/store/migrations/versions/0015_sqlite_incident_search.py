"""incidents: on SQLite, FTS5 trigram indexes for the incident search (PostgreSQL has pg_trgm, 0009)

The search (``q``: case-insensitive substring of the title, description, resource name or a
comment) read every incident on SQLite: about 5 s at a million.  ``incidents_search`` indexes
the three columns and ``comments_search`` the comments' text, both with the trigram tokenizer
(every three characters, case folded), so a search of three characters or more reads its
candidates from the index; the app keeps its LIKE on those candidates only, so it finds exactly
what it found before (gateway.incidents.api).  Both are external-content tables: they store the
index only, the text stays in incidents and timeline_entries (``comments_search`` reads it
through the view ``incident_comments``, the entries of kind 'commented'), and the 'rebuild'
command fills them from there.

Triggers keep them in step, and none runs for a repeat webhook: repeats UPDATE an incident's
counts, times and severity, and the update trigger names the three indexed columns alone
(``AFTER UPDATE OF``); a timeline entry is indexed only when it is a comment.  Nothing updates
or deletes incidents or comments today; the update and delete triggers keep the index right if
that changes.  A later migration that rebuilds incidents or timeline_entries on SQLite (a batch
"move and copy") drops their triggers with the old table: it must create them again.

Needs SQLite built with FTS5 (the python.org, Debian and Alpine builds are).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 18:40:00
"""
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

_INCIDENT_COLUMNS = 'title, description, resource_name'
_OLD_INCIDENT = 'old.id, old.title, old.description, old.resource_name'
_NEW_INCIDENT = 'new.id, new.title, new.description, new.resource_name'
UPGRADE = [
    # columnsize=0: no per-row size table, which only ranking (bm25) reads.
    f"CREATE VIRTUAL TABLE incidents_search USING fts5({_INCIDENT_COLUMNS}, content='incidents',"
    " content_rowid='id', tokenize='trigram', columnsize=0)",
    "CREATE VIEW incident_comments AS SELECT id, incident_id, note FROM timeline_entries WHERE kind = 'commented'",
    "CREATE VIRTUAL TABLE comments_search USING fts5(note, content='incident_comments', content_rowid='id',"
    " tokenize='trigram', columnsize=0)",
    "CREATE TRIGGER incidents_search_insert AFTER INSERT ON incidents BEGIN"
    f" INSERT INTO incidents_search (rowid, {_INCIDENT_COLUMNS}) VALUES ({_NEW_INCIDENT}); END",
    f"CREATE TRIGGER incidents_search_update AFTER UPDATE OF id, {_INCIDENT_COLUMNS} ON incidents BEGIN"
    f" INSERT INTO incidents_search (incidents_search, rowid, {_INCIDENT_COLUMNS}) VALUES ('delete', {_OLD_INCIDENT});"
    f" INSERT INTO incidents_search (rowid, {_INCIDENT_COLUMNS}) VALUES ({_NEW_INCIDENT}); END",
    "CREATE TRIGGER incidents_search_delete AFTER DELETE ON incidents BEGIN"
    f" INSERT INTO incidents_search (incidents_search, rowid, {_INCIDENT_COLUMNS}) VALUES ('delete', {_OLD_INCIDENT});"
    " END",
    "CREATE TRIGGER comments_search_insert AFTER INSERT ON timeline_entries WHEN new.kind = 'commented' BEGIN"
    " INSERT INTO comments_search (rowid, note) VALUES (new.id, new.note); END",
    "CREATE TRIGGER comments_search_update AFTER UPDATE OF id, kind, note ON timeline_entries"
    " WHEN old.kind = 'commented' OR new.kind = 'commented' BEGIN"
    " INSERT INTO comments_search (comments_search, rowid, note) SELECT 'delete', old.id, old.note"
    " WHERE old.kind = 'commented';"
    " INSERT INTO comments_search (rowid, note) SELECT new.id, new.note WHERE new.kind = 'commented'; END",
    "CREATE TRIGGER comments_search_delete AFTER DELETE ON timeline_entries WHEN old.kind = 'commented' BEGIN"
    " INSERT INTO comments_search (comments_search, rowid, note) VALUES ('delete', old.id, old.note); END",
    "INSERT INTO incidents_search (incidents_search) VALUES ('rebuild')",
    "INSERT INTO comments_search (comments_search) VALUES ('rebuild')",
]
DOWNGRADE = [
    *(f"DROP TRIGGER {table}_search_{event}" for table in ("incidents", "comments")
      for event in ("insert", "update", "delete")),
    "DROP TABLE comments_search",
    "DROP VIEW incident_comments",
    "DROP TABLE incidents_search",
]


def upgrade() -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    for statement in DOWNGRADE:
        op.execute(statement)

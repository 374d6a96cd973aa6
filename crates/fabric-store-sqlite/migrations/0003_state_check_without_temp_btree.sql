-- 0003: the same CHECK on tasks.state, written so that SQLite checks it with seven comparisons.
-- `state IN (<seven values>)` compiles to a temporary b-tree that every statement execution which
-- writes `state` builds afresh (every insert, claim and finish; about a fifth of their
-- instructions). Both forms accept exactly the same values, so no stored row can violate the new
-- one: this is SQLite's documented procedure for changing a CHECK constraint in place
-- (https://www.sqlite.org/lang_altertable.html#otheralter): edit the table's text in
-- sqlite_schema under writable_schema; the migration then changes the schema version so that
-- every connection reloads the schema.

PRAGMA writable_schema = ON;

UPDATE sqlite_schema
   SET sql = replace(sql,
       'CHECK (state IN
                         (''scheduled'', ''queued'', ''running'', ''succeeded'', ''failed'', ''cancelled'', ''expired''))',
       'CHECK (state = ''scheduled'' OR state = ''queued'' OR state = ''running'' OR state = ''succeeded''
                         OR state = ''failed'' OR state = ''cancelled'' OR state = ''expired'')')
 WHERE type = 'table' AND name = 'tasks';

PRAGMA writable_schema = OFF;

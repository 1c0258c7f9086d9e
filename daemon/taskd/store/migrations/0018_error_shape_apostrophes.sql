-- Error groups: an apostrophe inside a word (can't, customer's) no longer opens a quoted string.
-- It did in 0014's shape, so the quote that really opened one closed it, and the data quoted
-- after it stayed in the shape: "Couldn't find user 'alice'" and "... 'bob'" were two groups
-- (shapes "Couldn<str>alice'" and "Couldn<str>bob'"). A single-quoted string now starts at a
-- quote that does not follow a letter or digit and ends at one that no letter or digit follows
-- (an apostrophe inside it, O'Brien, stays in it). The failures recorded before get the new
-- groups: only those whose message holds an apostrophe after a letter or digit can change
-- (a fingerprint costs ~0.2 ms: the others are not recomputed), and only changed rows are
-- written.

CREATE OR REPLACE FUNCTION taskd.error_message_shape(message text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
SELECT regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
           left(coalesce(message, ''), 2000),
           -- quoted strings first: what they quote (numbers included) is data
           '(?<![[:alnum:]])''(?:[^'']|''(?=[[:alnum:]]))*''(?![[:alnum:]])|"[^"]*"',
           '<str>', 'g'),
           '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}',
           '<id>', 'g'),
           -- 0x..., or a word of 6+ hex digits holding a digit and a letter (ab12cd34)
           '0[xX][0-9a-fA-F]+|\m(?=[0-9a-fA-F]{6,}\M)(?=[a-fA-F]*[0-9])(?=[0-9]*[a-fA-F])'
           '[0-9a-fA-F]+\M', '<hex>', 'g'),
           '[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?', '<num>', 'g'),
           '\s+', ' ', 'g')
$$;

COMMENT ON FUNCTION taskd.error_message_shape(text) IS
    'An error message with its data replaced by placeholders (quoted strings <str>: an '
    'apostrophe inside a word opens none; UUIDs <id>, hexadecimal <hex>, numbers <num>, runs of '
    'white space one space), first 2,000 characters: failures that differ only in their data '
    'have one shape.';

UPDATE taskd.attempts a SET fingerprint = n.fingerprint
  FROM (SELECT run_id, attempt, taskd.error_fingerprint(error) AS fingerprint
          FROM taskd.attempts
         WHERE fingerprint IS NOT NULL AND error->>'message' ~ '[[:alnum:]]''') AS n
 WHERE a.run_id = n.run_id AND a.attempt = n.attempt
   AND a.fingerprint IS DISTINCT FROM n.fingerprint;

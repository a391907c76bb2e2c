-- pix 1.1 -> 1.2: placeholder in branch auth9 only, so that the 1.2 -> 1.3 upgrade has a path.
-- The real file is ext12's (issue 12); at merge the lead keeps ext12's version.

\echo Use "ALTER EXTENSION pix UPDATE TO '1.2'" to load this file. \quit

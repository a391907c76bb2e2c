-- pix 1.4 -> 1.5 (issue 22): confirming a batch no longer rewrites its iteration row's index
-- entries. The purge's age index was on coalesce(confirmed_at, requeued_at, delivered_at), so the
-- UPDATE that marks a batch confirmed (one per delivering read) could never be HOT; it is now on
-- delivered_at, which no UPDATE changes (see pix--1.5.sql). The purge keeps its rule (an iteration
-- goes once its batch was settled longer ago than pix.history_retention, or delivered while it is
-- not settled) and walks the new index in delivery order: a batch is never settled before it was
-- delivered. The 1.5 library purges through whichever of the two indexes it finds (history.c).
-- Building the new index locks pix.iteration against writes while it runs: update before serving,
-- as for every version.

\echo Use "ALTER EXTENSION pix UPDATE TO '1.5'" to load this file. \quit

CREATE INDEX iteration_by_delivery ON pix.iteration (delivered_at);
DROP INDEX pix.iteration_by_age;

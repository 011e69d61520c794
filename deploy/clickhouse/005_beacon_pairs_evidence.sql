-- Why each beacon_pairs row was written (flow.PairScore.Evidence):
--   own        the pair's own score reaches detect.pair_threshold; its
--              endpoint is not a reported candidate in the window;
--   beaconing  a pair of a reported candidate, counted in its
--              beaconing_subscribers (it beacons with the candidate's
--              period, alone or in the endpoint's pooled fit);
--   contact    a pair of a reported candidate that reached it in the window
--              but is not counted as beaconing.
-- Rows written before this column existed were all of the first kind.
ALTER TABLE beacon_pairs ADD COLUMN IF NOT EXISTS evidence LowCardinality(String) DEFAULT 'own';

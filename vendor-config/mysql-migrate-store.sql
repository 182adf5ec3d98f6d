-- Upgrades an index table of kafka-store 0.1 (rows keyed by topic,
-- partition and first offset only) to rows keyed by store too, so that
-- several stores can share one table. Run it once, with no kafka-store
-- writing to the table, after replacing `kafka_store_files` with the
-- configured table name if it differs:
--
--   mysql DATABASE < vendor-config/mysql-migrate-store.sql
--
-- The store of an existing row is read from its object URL, which is the
-- store's URL followed by TOPIC/PARTITION/FIRST.avro.
ALTER TABLE `kafka_store_files`
  ADD COLUMN store VARCHAR(500) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '' FIRST,
  MODIFY topic VARCHAR(249) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;
UPDATE `kafka_store_files`
  SET store = LEFT(object_url, CHAR_LENGTH(object_url) - CHAR_LENGTH(SUBSTRING_INDEX(object_url, '/', -3)) - 1);
ALTER TABLE `kafka_store_files`
  ALTER COLUMN store DROP DEFAULT,
  DROP PRIMARY KEY,
  ADD PRIMARY KEY (store, topic, `partition`, first_offset),
  DROP KEY by_time,
  ADD KEY by_time (store, topic, `partition`, max_timestamp);

-- Makes an index table's store and topic compare byte for byte, as
-- vendor-config/mysql-schema.sql now creates them. Kafka topic names are
-- case sensitive; in a table that compares them ignoring case (the
-- server's default collation), `Orders` and `orders` share rows. Run it
-- once, after replacing `kafka_store_files` with the configured table
-- name if it differs (kafka-store warns at start while it is needed):
--
--   mysql DATABASE < vendor-config/mysql-migrate-binary.sql
ALTER TABLE `kafka_store_files`
  MODIFY store VARCHAR(500) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  MODIFY topic VARCHAR(249) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;

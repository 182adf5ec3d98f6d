-- The MySQL/MariaDB index of kafka-store's archive ([mysql] in the config).
-- kafka-store creates it (with the configured table name) when
-- mysql.create_table = true; otherwise create it with this statement.
-- One row per archive object: the object holds the records of one
-- partition from first_offset up to (not including) next_offset. Several
-- stores may share the table: rows are keyed by the store's URL too.
-- Store and topic compare byte for byte (Kafka topic names are case
-- sensitive: `Orders` and `orders` are two topics).
-- (A table of kafka-store 0.1, without `store`, is upgraded in place with
-- vendor-config/mysql-migrate-store.sql; one whose store and topic compare
-- ignoring case, with vendor-config/mysql-migrate-binary.sql.)
CREATE TABLE IF NOT EXISTS `kafka_store_files` (
  -- The store's URL as kafka-store names it (file://DIR, gs://BUCKET/PREFIX).
  store         VARCHAR(500)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  topic         VARCHAR(249)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  `partition`   INT           NOT NULL,
  first_offset  BIGINT        NOT NULL,
  next_offset   BIGINT        NOT NULL,
  record_count  BIGINT        NOT NULL,
  -- Record timestamps (ms since the epoch); NULL for a file without records.
  min_timestamp BIGINT        NULL,
  max_timestamp BIGINT        NULL,
  bytes         BIGINT        NOT NULL,
  -- CRC32C of the object; NULL when the store does not keep one (file://).
  crc32c        INT UNSIGNED  NULL,
  object_url    VARCHAR(2048) NOT NULL,
  created_at    TIMESTAMP(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (store, topic, `partition`, first_offset),
  KEY by_time (store, topic, `partition`, max_timestamp)
) ENGINE = InnoDB

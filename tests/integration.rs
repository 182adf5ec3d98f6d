//! Integration tests against real services (Kafka, and later the GCS
//! emulator and MariaDB), started by `vendor-config/test-services.sh`.
//! One test binary, one helper module (`support`).

mod support;

mod archive;
mod bad_input;
mod check;
mod edge_data;
mod gcs;
mod group;
mod history;
mod index;
mod init_scripts;
mod kafka_client;
mod layout;
mod metrics;
mod partitions;
mod restore;
mod resume;
mod s3;
mod stop;
mod tls_sasl;
mod verify;

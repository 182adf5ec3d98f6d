//! Pure format logic, at the bottom of the program: the record as the
//! archive sees it, names and chain arithmetic, the Avro container (writer,
//! reader, codecs), rotation and timestamps.
//!
//! Nothing here opens a file, a socket or a clock-driven decision; every
//! other layer may use it, it uses none of them.

pub mod avro;
pub mod names;
pub mod record;
pub(crate) mod rotation;
pub mod timestamp;

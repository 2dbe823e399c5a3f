//! channels_redis's consistent hash: which shard (host) a name lives on
//! (WIRE.md §5).

/// Returns the shard index in `0..shards` for `name`, exactly as
/// channels_redis computes it: `int((crc32(name) & 0xFFF) / (4096.0 / n))`,
/// or 0 when there is at most one shard.
///
/// # Examples
/// ```
/// use channels_redis::consistent_hash;
/// assert_eq!(consistent_hash("room.1", 3), 2);
/// assert_eq!(consistent_hash("chat", 1), 0);
/// ```
pub fn consistent_hash(name: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let value = crc32fast::hash(name.as_bytes()) & 0xFFF;
    // Python divides in floating point; integer arithmetic differs at n >= 186.
    #[allow(clippy::cast_precision_loss)] // shard counts are tiny
    let divisor = 4096.0 / shards as f64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 0 <= result < shards
    let index = (f64::from(value) / divisor) as usize;
    index.min(shards - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_table_vectors() {
        let table: &[(&str, u32, [usize; 3])] = &[
            ("chat", 682, [0, 0, 0]),
            ("lobby", 1527, [0, 1, 1]),
            ("room.1", 3013, [1, 2, 2]),
            (
                "specific.0123456789abcdef0123456789abcdef!",
                1393,
                [0, 1, 1],
            ),
            ("asgi__group__chat", 3976, [1, 2, 3]),
        ];
        for (name, crc, by_n) in table {
            assert_eq!(crc32fast::hash(name.as_bytes()) & 0xFFF, *crc, "{name}");
            for (i, n) in [2, 3, 4].into_iter().enumerate() {
                assert_eq!(consistent_hash(name, n), by_n[i], "{name} n={n}");
            }
        }
    }

    #[test]
    fn h2_consistent_hash_result() {
        assert_eq!(consistent_hash("key_one", 2), 1);
        assert_eq!(consistent_hash("key_two", 2), 0);
        assert_eq!(consistent_hash("key_one", 10), 6);
        assert_eq!(consistent_hash("key_two", 10), 4);
        assert_eq!(consistent_hash("anything", 1), 0);
        assert_eq!(consistent_hash("anything", 0), 0);
    }

    #[test]
    fn float_division_matters_at_large_rings() {
        // For v = 2048 and n = 186 float and integer division disagree; every
        // index must still be in range for every n.
        for n in 2..300 {
            for name in ["a", "b", "chat", "lobby", "room.1"] {
                assert!(consistent_hash(name, n) < n);
            }
        }
    }
}

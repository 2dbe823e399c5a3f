//! The macros backends call from `tests/conformance.rs`.

/// Generates one `#[test]` per \[G\] check (every layer), named like the check
/// function, each on a fresh [`test_runtime`](crate::conformance::test_runtime)
/// with `$factory` (an expression producing a
/// [`LayerFactory`](crate::conformance::LayerFactory)) evaluated inside it.
///
/// ```ignore
/// channels_core::conformance_general!(MemoryFactory);
/// ```
#[macro_export]
macro_rules! conformance_general {
    ($factory:expr $(,)?) => {
        $crate::__conformance_tests!(
            $factory;
            n1_valid_names,
            n2_long_names_rejected,
            n3_bad_characters_rejected,
            n4_process_local_names,
            n5_every_call_validates,
            d5_trailing_newline_rejected,
            s1_send_receive,
            s2_multi_send_receive,
            s3_receive_waits,
            s4_messages_are_copies,
            l1_new_channel_round_trip,
            l2_new_channel_unique,
            l4_double_receive,
            g1_groups_basic,
            g2_groups_same_prefix,
            g3_discard_non_member_and_empty_group,
            g4_add_twice_one_copy,
            g5_no_routing_key_in_messages,
            f1_flush_clears,
            f2_works_after_flush,
            f3_close_and_extensions,
            k1_receive_cancel,
            v1_message_must_be_map_without_routing_key,
            v2_message_needs_string_type,
            x1_cancel_stress,
            x2_many_receivers,
            x3_competing_receivers,
            x4_large_group,
            x5_value_round_trip,
            x6_large_message,
            x7_long_new_channel_prefix,
            rh1_handle_receives_sends_and_groups,
            rh2_handle_recv_is_cancel_safe,
            rh3_two_handles_share_a_channel,
            rh4_dropping_the_last_handle_releases,
            rh5_handle_and_receive_share_a_mailbox,
        );
    };
}

/// Generates one `#[test]` per \[Q\] check (queue layers: memory and Redis
/// core: plain names, capacity, expiry), like [`conformance_general!`].
///
/// ```ignore
/// channels_core::conformance_queue!(MemoryFactory);
/// ```
#[macro_export]
macro_rules! conformance_queue {
    ($factory:expr $(,)?) => {
        $crate::__conformance_tests!(
            $factory;
            s5_plain_names,
            l1_new_channel_is_process_local,
            c1_send_capacity,
            c2_send_specific_capacity,
            c3_capacity_patterns,
            c4_group_send_never_full,
            c5_group_send_capacity,
            c6_group_send_capacity_multiple_channels,
            c7_full_leaves_queue_unchanged,
            e1_expiry_single,
            e2_expiry_unread,
            e3_expiry_multi,
            e4_earliest_message_expires,
            e4_group_send_earliest_message_expires,
            e5_all_messages_under_expiry,
            e6_group_expiry,
        );
    };
}

/// Generates the tests for a list of checks (used by the public macros).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($factory:expr; $($check:ident),+ $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::conformance::test_runtime().block_on(async {
                    let factory = $factory;
                    $crate::conformance::$check(&factory).await;
                });
            }
        )+
    };
}

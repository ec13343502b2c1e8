//! Spreading syscall-bound reads over the cores.
//!
//! sysfs reads of different devices are independent and cost kernel time,
//! not waiting: a thread per core cuts a large node's scan by about that
//! factor. Small inputs run on the caller's thread, since a thread costs
//! more than a few dozen reads.

/// Runs `f` over `items` in contiguous chunks of at least `min_chunk`,
/// one thread per core (at most 8), and returns the chunks' results in
/// the items' order.
///
/// A panic in `f` is raised again on the caller's thread.
pub fn map_chunks<I, R, F>(items: &[I], min_chunk: usize, f: F) -> Vec<R>
where
    I: Sync,
    R: Send,
    F: Fn(&[I]) -> R + Sync,
{
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let chunk = items.len().div_ceil(threads).max(min_chunk).max(1);
    if items.len() <= chunk {
        return vec![f(items)];
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || f(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_come_back_in_order_and_cover_every_item() {
        let items: Vec<u32> = (0..1000).collect();
        let parts = map_chunks(&items, 10, |part| part.to_vec());
        assert_eq!(parts.concat(), items);
    }

    #[test]
    fn small_inputs_and_empty_ones_make_one_chunk() {
        assert_eq!(map_chunks(&[1, 2, 3], 64, |p| p.len()), [3]);
        assert_eq!(map_chunks(&[] as &[u8], 64, |p| p.len()), [0]);
    }
}

//! Which endpoint gets the next attempt: among those healthy with a breaker that admits it, the
//! one with the fewest requests in flight, so a slow replica naturally receives less. Endpoints
//! this request already tried come last, and ties rotate so equal replicas share the load.

/// What the balancer knows about one endpoint at the moment of choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub available: bool,
    pub tried: bool,
    pub outstanding: usize,
}

/// Indices of the available endpoints, best first. `rotation` breaks ties between equals.
pub fn preference(candidates: &[Candidate], rotation: usize) -> Vec<usize> {
    let count = candidates.len().max(1);
    let mut order: Vec<usize> = (0..candidates.len())
        .filter(|&index| candidates[index].available)
        .collect();
    order.sort_by_key(|&index| {
        let candidate = candidates[index];
        let distance = (index + count - rotation % count) % count;
        (candidate.tried, candidate.outstanding, distance)
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(available: bool, tried: bool, outstanding: usize) -> Candidate {
        Candidate {
            available,
            tried,
            outstanding,
        }
    }

    #[test]
    fn fewest_outstanding_first_untried_before_tried_unavailable_never() {
        let cases: &[(&[Candidate], usize, &[usize])] = &[
            (&[], 0, &[]),
            (
                &[candidate(true, false, 3), candidate(true, false, 1)],
                0,
                &[1, 0],
            ),
            (
                &[candidate(true, true, 0), candidate(true, false, 5)],
                0,
                &[1, 0],
            ),
            (
                &[candidate(false, false, 0), candidate(true, false, 9)],
                0,
                &[1],
            ),
            // Equal endpoints: the rotation decides who goes first.
            (
                &[candidate(true, false, 0), candidate(true, false, 0)],
                0,
                &[0, 1],
            ),
            (
                &[candidate(true, false, 0), candidate(true, false, 0)],
                1,
                &[1, 0],
            ),
            (&[candidate(true, false, 0); 3], 5, &[2, 0, 1]),
        ];
        for (candidates, rotation, expected) in cases {
            assert_eq!(
                preference(candidates, *rotation),
                expected.to_vec(),
                "{candidates:?} rotation {rotation}"
            );
        }
    }
}

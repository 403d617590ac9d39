//! Which sources each worker of the pool serves: every enabled source gets the number of
//! workers it asks for (at most the pool), spread so that the busiest worker serves fewest.

/// The sources worker `index` of a pool of `pool` serves, in the order given. `sources` are
/// (name, workers asked for) pairs in a stable order (by name); a source asking for 0 is
/// served by none.
pub fn assigned<'a>(index: usize, pool: usize, sources: &[(&'a str, usize)]) -> Vec<&'a str> {
    if pool == 0 {
        return Vec::new();
    }
    // Sources asking for fewer workers are placed first, so that those wanting the whole pool
    // fill the gaps rather than stacking onto worker 0.
    let mut order: Vec<&(&str, usize)> = sources.iter().collect();
    order.sort_by_key(|(_, workers)| *workers);
    let mut next = 0;
    let mut mine = Vec::new();
    for (name, workers) in order {
        for _ in 0..(*workers).min(pool) {
            if next % pool == index {
                mine.push(*name);
            }
            next += 1;
        }
    }
    mine.sort_by_key(|name| sources.iter().position(|(n, _)| n == name));
    mine
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(pool: usize, sources: &[(&'static str, usize)]) -> Vec<Vec<&'static str>> {
        (0..pool).map(|i| assigned(i, pool, sources)).collect()
    }

    #[test]
    fn one_worker_serves_everything() {
        assert_eq!(all(1, &[("events", 1), ("login", 1), ("orders", 3)]), vec![vec!["events", "login", "orders"]]);
    }

    #[test]
    fn each_source_gets_its_workers_once_each() {
        let pools = all(4, &[("login", 4), ("orders", 1), ("events", 2)]);
        for (name, workers) in [("login", 4), ("orders", 1), ("events", 2)] {
            assert_eq!(pools.iter().filter(|p| p.contains(&name)).count(), workers, "{name}");
        }
        // 7 replicas on 4 workers: none serves more than 2 sources.
        assert!(pools.iter().all(|p| p.len() <= 2), "{pools:?}");
    }

    #[test]
    fn more_asked_than_the_pool_is_capped() {
        assert_eq!(all(2, &[("login", 16)]), vec![vec!["login"], vec!["login"]]);
    }

    #[test]
    fn zero_workers_and_empty_pools_serve_nothing() {
        assert_eq!(all(2, &[("manual", 0)]), vec![Vec::<&str>::new(), vec![]]);
        assert!(assigned(0, 0, &[("login", 1)]).is_empty());
    }
}

//! Graphs for scenarios: lines and random connected graphs, and hop counts.
//!
//! Nodes are indices `0..n`; edges are undirected pairs `(a, b)` with `a < b`.

use crate::Rng;
use std::collections::{BTreeSet, VecDeque};

/// `0 - 1 - 2 - … - (n-1)`.
pub fn line(n: usize) -> Vec<(usize, usize)> {
    (1..n).map(|i| (i - 1, i)).collect()
}

/// A connected random graph on `n` nodes with average degree close to
/// `avg_degree`: a random spanning tree, then uniformly random extra edges.
/// Deterministic for a given RNG state.
pub fn random_connected(n: usize, avg_degree: f64, rng: &mut Rng) -> Vec<(usize, usize)> {
    let mut edges = BTreeSet::new();
    for i in 1..n {
        let j = rng.below(i as u64) as usize;
        edges.insert((j, i));
    }
    let target = ((n as f64 * avg_degree) / 2.0).round() as usize;
    let max_edges = n.saturating_mul(n.saturating_sub(1)) / 2;
    let target = target.min(max_edges);
    while edges.len() < target {
        let a = rng.below(n as u64) as usize;
        let b = rng.below(n as u64) as usize;
        if a != b {
            edges.insert((a.min(b), a.max(b)));
        }
    }
    edges.into_iter().collect()
}

/// Adjacency lists, each sorted.
pub fn adjacency(n: usize, edges: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in edges {
        adj[a].push(b);
        adj[b].push(a);
    }
    for l in &mut adj {
        l.sort_unstable();
        l.dedup();
    }
    adj
}

/// Hop counts from `src` (breadth-first); `None` where unreachable.
pub fn hops_from(adj: &[Vec<usize>], src: usize) -> Vec<Option<u32>> {
    let mut dist = vec![None; adj.len()];
    let mut q = VecDeque::new();
    dist[src] = Some(0);
    q.push_back(src);
    while let Some(u) = q.pop_front() {
        let d = dist[u].unwrap_or(0);
        for &v in &adj[u] {
            if dist[v].is_none() {
                dist[v] = Some(d + 1);
                q.push_back(v);
            }
        }
    }
    dist
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_graph_is_connected_with_the_asked_degree() {
        let mut rng = Rng::new(5);
        let e = random_connected(500, 8.0, &mut rng);
        assert_eq!(e.len(), 2000);
        let adj = adjacency(500, &e);
        assert!(hops_from(&adj, 0).iter().all(Option::is_some));
    }

    #[test]
    fn line_hops() {
        let adj = adjacency(10, &line(10));
        assert_eq!(hops_from(&adj, 0)[9], Some(9));
    }
}

"""The resident-first policy needs clearly fewer cold loads than round-robin and random."""
from bench import placement_sim


def test_resident_first_needs_clearly_fewer_cold_loads() -> None:
    results = placement_sim.run(requests=4000)
    print("\n" + placement_sim.table(results))
    ours = results["resident-first"]["cold_fraction"]
    assert ours < 0.5 * results["round-robin"]["cold_fraction"]
    assert ours < 0.5 * results["random"]["cold_fraction"]
    assert results["resident-first"]["placed"] >= 0.9 * results["resident-first"]["requests"]

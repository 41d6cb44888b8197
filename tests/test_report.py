"""Tables and plots of results: the Pareto front and what the plot shows."""

from edgecompress import report


def test_pareto_front_keeps_only_points_nothing_beats():
    costs = [10, 20, 30, 15, 40]
    accuracies = [0.5, 0.7, 0.6, 0.5, 0.9]  # 30 loses to 20; 15 ties 10 at a higher cost
    assert report.pareto_front(costs, accuracies) == [0, 1, 4]


def test_pareto_plot_numbers_points_and_lists_every_name(tmp_path):
    rows = [{"variant": f"variant {i}", "bytes": 1000 + i, "latency_ms": 0.04,
             "accuracy": 0.75} for i in range(7)]  # on top of each other
    figure = report.pareto_plot(rows, tmp_path / "plot.png")
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == [f"{i + 1}  variant {i}" for i in range(7)]
    numbers = {text.get_text() for text in figure.axes[0].texts}
    assert numbers == {str(i) for i in range(1, 8)}
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"

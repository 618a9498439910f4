"""Accuracy of a switchable network over configurations, costs (MAdds, parameters), the end-of-run
report (tables, plots) and MutualNet's query table."""

"""Accuracy of a switchable network over configurations, costs (MAdds, parameters), the end-of-run
report (tables, plots), MutualNet's query table and adaptive (cascade) inference; the three jobs of
``python -m resnet_switch.evaluate`` (:mod:`.table_job`, :mod:`.query_job`, :mod:`.adaptive_job`,
sharing :mod:`.checkpoint_eval`)."""

"""A study: its config, how names resolve to files and a Scenario, how ``--set`` changes it,
how it runs and writes its folder."""

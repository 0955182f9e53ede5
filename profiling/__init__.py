"""offramp.profiling"""

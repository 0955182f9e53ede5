"""offramp.traces"""

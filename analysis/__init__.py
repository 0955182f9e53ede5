"""offramp.analysis"""

"""offramp.policies"""

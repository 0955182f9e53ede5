"""offramp.sim"""

"""Consul's ACL system: rule language, authorizer, replicated state, token resolution."""

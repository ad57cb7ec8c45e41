"""The only importer of cryptography and joserfc: keys, JWKS, JWS, DPoP proofs, hashing."""

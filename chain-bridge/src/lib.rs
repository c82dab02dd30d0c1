//! Chain bridge: CARBON as an ERC-20 on an EVM chain.
//! Not built yet: the chain-bridge issue brings it.

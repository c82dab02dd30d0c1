// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControlDefaultAdminRules} from "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";

/// @title Anchors of the EcoLedger event store's global hash chain.
/// @notice The bridge periodically writes a checkpoint of the global chain (the position of its
/// head event, the head hash, and how many events the chain holds up to there), so that
/// `ecoledger verify --chain` can prove the event store still matches what was anchored. Only
/// hashes and counts go on chain. Positions strictly increase: an anchor can never be rewritten
/// or inserted behind a later one.
///
/// Roles: `DEFAULT_ADMIN_ROLE` on a cold key (two-step, delayed transfer), `BRIDGE_ROLE` on the
/// bridge's hot key, which alone anchors.
contract LedgerAnchor is AccessControlDefaultAdminRules {
    /// @notice Writes anchors.
    bytes32 public constant BRIDGE_ROLE = keccak256("BRIDGE_ROLE");

    /// @notice One checkpoint of the global chain.
    struct Anchor {
        bytes32 headHash;
        uint64 count;
        uint64 blockNumber;
    }

    /// @notice Position of the latest anchor (0 before the first).
    uint64 public latestPosition;
    /// @notice How many anchors were written.
    uint64 public anchorCount;
    /// @notice The anchors by position (`headHash` zero where none was written).
    mapping(uint64 position => Anchor) public anchors;

    /// @notice A checkpoint of the global chain was anchored.
    /// @param position global position of the chain's head event at the checkpoint
    /// @param headHash the global chain's hash at `position`
    /// @param count events in the global chain up to and including `position`
    event Anchored(uint64 indexed position, bytes32 headHash, uint64 count);

    /// @notice `position` is not above the latest anchored position `latest`.
    error PositionNotIncreasing(uint64 position, uint64 latest);
    /// @notice An anchor needs a head hash and at least one event.
    error EmptyAnchor();
    /// @notice A role cannot be given to the zero address.
    error ZeroAddress();

    /// @param adminDelay seconds a scheduled admin transfer waits before the new admin may accept
    /// @param admin the cold key holding `DEFAULT_ADMIN_ROLE`
    /// @param bridge the hot key holding `BRIDGE_ROLE`
    constructor(uint48 adminDelay, address admin, address bridge) AccessControlDefaultAdminRules(adminDelay, admin) {
        if (bridge == address(0)) revert ZeroAddress();
        _grantRole(BRIDGE_ROLE, bridge);
    }

    /// @notice Anchors the checkpoint (`position`, `headHash`, `count`); `position` must be above
    /// every earlier anchor's.
    function anchor(uint64 position, bytes32 headHash, uint64 count) external onlyRole(BRIDGE_ROLE) {
        if (position <= latestPosition) revert PositionNotIncreasing(position, latestPosition);
        if (headHash == bytes32(0) || count == 0) revert EmptyAnchor();
        anchors[position] = Anchor({headHash: headHash, count: count, blockNumber: uint64(block.number)});
        latestPosition = position;
        anchorCount += 1;
        emit Anchored(position, headHash, count);
    }
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title Staking of CARBON with a minimum lock.
/// @notice Holders lock CARBON here and take it back after the lock. There are no rewards and
/// this contract never mints: it only holds what was staked, so the tokens it holds always
/// equal `totalStaked`. Each stake locks the holder's whole balance again for `minimumLock`
/// seconds from now: there is one unlock time per holder, never a list of lots.
contract CarbonStaking is ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice One holder's stake.
    struct Stake {
        uint256 amount;
        uint64 unlockAt;
    }

    /// @notice The staked token (CarbonToken).
    IERC20 public immutable token;
    /// @notice Seconds every stake stays locked.
    uint64 public immutable minimumLock;
    /// @notice Token units staked by all holders.
    uint256 public totalStaked;
    /// @notice Each holder's stake and the time it unlocks.
    mapping(address holder => Stake) public stakes;

    /// @notice `holder` staked `amount`; its whole stake, now `total`, unlocks at `unlockAt`.
    event Staked(address indexed holder, uint256 amount, uint256 total, uint64 unlockAt);
    /// @notice `holder` took back `amount`; `remaining` stays staked.
    event Unstaked(address indexed holder, uint256 amount, uint256 remaining);

    /// @notice Amounts are positive.
    error ZeroAmount();
    /// @notice The stake is locked until `unlockAt` (a block timestamp).
    error StakeLocked(uint64 unlockAt);
    /// @notice Unstaking more than is staked.
    error InsufficientStake(uint256 requested, uint256 staked);
    /// @notice The constructor needs a token and a lock of at least one second.
    error InvalidConfiguration();

    /// @param stakedToken the CarbonToken
    /// @param minimumLockSeconds seconds every stake stays locked (at least 1)
    constructor(IERC20 stakedToken, uint64 minimumLockSeconds) {
        if (address(stakedToken) == address(0) || minimumLockSeconds == 0) revert InvalidConfiguration();
        token = stakedToken;
        minimumLock = minimumLockSeconds;
    }

    /// @notice Stakes `amount` of the caller's tokens (approve this contract first) and locks
    /// the caller's whole stake for `minimumLock` seconds from now.
    function stake(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Stake storage s = stakes[msg.sender];
        s.amount += amount;
        s.unlockAt = uint64(block.timestamp) + minimumLock;
        totalStaked += amount;
        token.safeTransferFrom(msg.sender, address(this), amount);
        emit Staked(msg.sender, amount, s.amount, s.unlockAt);
    }

    /// @notice Returns `amount` of the caller's stake once its lock has passed.
    function unstake(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Stake storage s = stakes[msg.sender];
        if (block.timestamp < s.unlockAt) revert StakeLocked(s.unlockAt);
        if (amount > s.amount) revert InsufficientStake(amount, s.amount);
        s.amount -= amount;
        totalStaked -= amount;
        token.safeTransfer(msg.sender, amount);
        emit Unstaked(msg.sender, amount, s.amount);
    }
}

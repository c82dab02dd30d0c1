// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControlDefaultAdminRules} from "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Pausable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Pausable.sol";

/// @title CARBON on chain: the EcoLedger ledger's CARBON as an ERC-20.
/// @notice One token unit is one ledger unit: `decimals() = 3`, the ledger's CARBON scale
/// (0.001 tCO2e), so chain and ledger amounts map exactly, as integers.
///
/// Keys and roles:
/// - `DEFAULT_ADMIN_ROLE` sits on a separate cold key and moves only through the two-step,
///   delayed transfer of `AccessControlDefaultAdminRules`. It grants and revokes the other roles
///   (key rotation), sets the daily mint cap, and is the only role that can unpause.
/// - `BRIDGE_ROLE` (the bridge's hot key) mints withdrawals and records ledger retirements.
/// - `PAUSER_ROLE` can pause. Unpausing needs the admin: a leaked hot key can stop the token
///   but never reopen it.
/// While paused, nothing moves: no mint, transfer or burn, and no retirement is recorded.
///
/// References: `ref` (a withdrawal), `id` (a retirement) and `accountRef` (a platform wallet)
/// are UUIDs laid out as their 16 bytes followed by 16 zero bytes; anything else is refused
/// (`MalformedRef`) so an encoding bug in the bridge fails loudly instead of minting under a
/// reference the ledger cannot find. Only ids and hashes go on chain, never names or reasons.
contract CarbonToken is ERC20Pausable, AccessControlDefaultAdminRules {
    /// @notice Mints withdrawals (`mint`) and records ledger retirements (`recordRetirement`).
    bytes32 public constant BRIDGE_ROLE = keccak256("BRIDGE_ROLE");
    /// @notice Pauses every token movement (`pause`).
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");

    /// @notice A retirement of credits held in the ledger, recorded by the bridge.
    struct RecordedRetirement {
        uint256 amount;
        bytes32 certHash;
    }

    /// @notice Whether a withdrawal reference has been minted (once per ref, forever).
    mapping(bytes32 ref => bool) public mintedRef;
    /// @notice The ledger retirements recorded so far, by retirement id (`certHash` is zero for
    /// an id never recorded).
    mapping(bytes32 id => RecordedRetirement) public recordedRetirements;

    /// @notice Most token units the bridge may mint per UTC day (`block.timestamp / 1 days`).
    uint256 public dailyMintCap;
    uint256 private _mintDay;
    uint256 private _mintedOnMintDay;

    /// @notice A withdrawal was minted.
    /// @param ref the withdrawal's reference (its UUID, then 16 zero bytes)
    /// @param to the linked address that received the tokens
    /// @param amount token units minted (ledger units at scale 3)
    event Minted(bytes32 indexed ref, address indexed to, uint256 amount);

    /// @notice A holder burned tokens to move them into a platform wallet.
    /// @param from the holder whose tokens were burned
    /// @param accountRef the platform wallet to credit (its UUID, then 16 zero bytes)
    /// @param amount token units burned
    event BridgedIn(address indexed from, bytes32 indexed accountRef, uint256 amount);

    /// @notice A holder retired tokens on chain: they are burned for good.
    /// @param holder the address whose tokens were burned
    /// @param certHash the holder's hash of its retirement certificate (any 32 bytes; zero for none)
    /// @param amount token units retired
    event Retired(address indexed holder, bytes32 indexed certHash, uint256 amount);

    /// @notice A retirement of credits held in the ledger was recorded; the supply is unchanged.
    /// @param id the ledger retirement's id (its UUID, then 16 zero bytes)
    /// @param certHash SHA-256 of the certificate's RFC 8785 bytes
    /// @param amount ledger units retired
    event RetirementRecorded(bytes32 indexed id, bytes32 indexed certHash, uint256 amount);

    /// @notice The admin changed the daily mint cap.
    event DailyMintCapChanged(uint256 previousCap, uint256 newCap);

    /// @notice `ref` was minted before: the withdrawal is already done (find its `Minted` log).
    error RefAlreadyMinted(bytes32 ref);
    /// @notice A retirement with this id was recorded before.
    error RetirementAlreadyRecorded(bytes32 id);
    /// @notice Minting `amount` would pass today's cap; `remaining` could still be minted today.
    error DailyMintCapExceeded(uint256 amount, uint256 remaining);
    /// @notice Not a UUID reference (16 bytes, then 16 zero bytes, not all zero).
    error MalformedRef(bytes32 ref);
    /// @notice Amounts are positive.
    error ZeroAmount();
    /// @notice A retirement's certificate hash cannot be zero.
    error ZeroCertHash();
    /// @notice A role cannot be given to the zero address.
    error ZeroAddress();

    /// @param adminDelay seconds a scheduled admin transfer waits before the new admin may accept
    /// @param admin the cold key holding `DEFAULT_ADMIN_ROLE`
    /// @param bridge the hot key holding `BRIDGE_ROLE`
    /// @param pauser the key holding `PAUSER_ROLE`
    /// @param initialDailyMintCap token units the bridge may mint per UTC day
    constructor(uint48 adminDelay, address admin, address bridge, address pauser, uint256 initialDailyMintCap)
        ERC20("EcoLedger Carbon", "CARBON")
        AccessControlDefaultAdminRules(adminDelay, admin)
    {
        if (bridge == address(0) || pauser == address(0)) revert ZeroAddress();
        _grantRole(BRIDGE_ROLE, bridge);
        _grantRole(PAUSER_ROLE, pauser);
        dailyMintCap = initialDailyMintCap;
        emit DailyMintCapChanged(0, initialDailyMintCap);
    }

    /// @notice The ledger's CARBON scale: one unit is 0.001 tCO2e.
    function decimals() public pure override returns (uint8) {
        return 3;
    }

    /// @notice Mints `amount` to `to` for the withdrawal `ref`, at most once per ref and within
    /// the daily cap. A repeat reverts with `RefAlreadyMinted` before any other check but the
    /// role, so the bridge can tell "already done" from "refused".
    function mint(address to, uint256 amount, bytes32 ref) external onlyRole(BRIDGE_ROLE) {
        _requireUuidRef(ref);
        if (mintedRef[ref]) revert RefAlreadyMinted(ref);
        if (amount == 0) revert ZeroAmount();
        uint256 day = block.timestamp / 1 days;
        uint256 mintedToday = day == _mintDay ? _mintedOnMintDay : 0;
        uint256 remaining = dailyMintCap > mintedToday ? dailyMintCap - mintedToday : 0;
        if (amount > remaining) revert DailyMintCapExceeded(amount, remaining);

        mintedRef[ref] = true;
        _mintDay = day;
        _mintedOnMintDay = mintedToday + amount;
        _mint(to, amount);
        emit Minted(ref, to, amount);
    }

    /// @notice Token units the bridge can still mint today.
    function mintableToday() external view returns (uint256) {
        uint256 mintedToday = block.timestamp / 1 days == _mintDay ? _mintedOnMintDay : 0;
        return dailyMintCap > mintedToday ? dailyMintCap - mintedToday : 0;
    }

    /// @notice Sets the daily mint cap (admin only); today's mints so far still count.
    function setDailyMintCap(uint256 newCap) external onlyRole(DEFAULT_ADMIN_ROLE) {
        emit DailyMintCapChanged(dailyMintCap, newCap);
        dailyMintCap = newCap;
    }

    /// @notice Burns `amount` of the caller's tokens to credit the platform wallet `accountRef`.
    function bridgeIn(uint256 amount, bytes32 accountRef) external {
        _requireUuidRef(accountRef);
        if (amount == 0) revert ZeroAmount();
        _burn(_msgSender(), amount);
        emit BridgedIn(_msgSender(), accountRef, amount);
    }

    /// @notice Burns `amount` of the caller's tokens as a retirement, for good.
    function retire(uint256 amount, bytes32 certHash) external {
        if (amount == 0) revert ZeroAmount();
        _burn(_msgSender(), amount);
        emit Retired(_msgSender(), certHash, amount);
    }

    /// @notice Records a retirement of credits held in the ledger, once per `id`. No token moves:
    /// the retired credits never were on chain.
    function recordRetirement(bytes32 id, uint256 amount, bytes32 certHash)
        external
        onlyRole(BRIDGE_ROLE)
        whenNotPaused
    {
        _requireUuidRef(id);
        if (recordedRetirements[id].certHash != bytes32(0)) revert RetirementAlreadyRecorded(id);
        if (amount == 0) revert ZeroAmount();
        if (certHash == bytes32(0)) revert ZeroCertHash();
        recordedRetirements[id] = RecordedRetirement({amount: amount, certHash: certHash});
        emit RetirementRecorded(id, certHash, amount);
    }

    /// @notice Stops every token movement (pauser role).
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @notice Lets tokens move again (admin only).
    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    function _requireUuidRef(bytes32 ref) private pure {
        if (ref == bytes32(0) || uint128(uint256(ref)) != 0) revert MalformedRef(ref);
    }
}

//! Placement: the bin packing that puts a trial's [`ResourceRequest`] on the registered agents
//! ([`Cluster`]).
//!
//! Placement is pure: the cluster keeps what every agent has and what is allocated on it, and
//! answers where a request fits now ([`Allocation`]), or why it never can ([`Unplaceable`]). A
//! fraction of a GPU is never split across devices, a whole number above one gets that many
//! distinct devices of one agent, and a GPU split into MIG instances offers each instance as a
//! device. Amounts are kept in integer thousandths ([`Need`]), so four 0.25 shares fill a device
//! exactly and three 0.333 shares fit on one.
//!
//! ```
//! use tune_core::resources::{Bundle, GpuInfo, Inventory, ResourceRequest};
//! use tune_server::packing::Cluster;
//!
//! let mut cluster = Cluster::default();
//! let gpu = GpuInfo { index: 0, uuid: "GPU-0".into(), model: "H100".into(), ..GpuInfo::default() };
//! let inventory = Inventory { cpus: 16.0, memory: 64 << 30, gpus: vec![gpu], ..Inventory::default() };
//! cluster.add_agent("node-1", inventory);
//! let half = Bundle { gpu: 0.5, ..Bundle::default() };
//! let request = ResourceRequest { bundles: vec![half], ..ResourceRequest::default() };
//! let allocation = cluster.allocate(&request).unwrap();
//! assert_eq!(allocation.agents(), ["node-1"]);
//! assert_eq!(allocation.cuda_visible_devices(0), "0");
//! cluster.release(&allocation);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tune_core::resources::{
    Bundle, GpuInfo, Inventory, MILLI, Need, Placement, ResourceRequest, format_size, to_milli,
};

/// Integer thousandths as a number: 2000 → `2`, 500 → `0.5`.
fn milli_text(milli: u64) -> String {
    format!("{}", milli as f64 / MILLI as f64)
}

/// A share of one device given to a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuShare {
    /// What goes in `CUDA_VISIBLE_DEVICES`: the GPU index as a decimal string, or a MIG uuid.
    pub device: String,
    /// The index of the (parent) GPU.
    pub index: u32,
    /// The share of the device: 1 for a whole device, or the bundle's fraction.
    pub share: f64,
}

/// Where one bundle of a request was placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundlePlacement {
    /// The agent that runs it.
    pub agent: String,
    /// The bundle placed (what [`Cluster::release`] gives back).
    pub bundle: Bundle,
    /// The devices it gets (none when the bundle asks for no GPU).
    pub gpus: Vec<GpuShare>,
}

/// Where every bundle of a request was placed, in request order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Allocation {
    /// One placement per bundle, in request order.
    pub bundles: Vec<BundlePlacement>,
}

impl Allocation {
    /// The agents used, each once, in order of first use.
    pub fn agents(&self) -> Vec<&str> {
        let mut agents: Vec<&str> = Vec::new();
        for placement in &self.bundles {
            if !agents.contains(&placement.agent.as_str()) {
                agents.push(&placement.agent);
            }
        }
        agents
    }

    /// The `CUDA_VISIBLE_DEVICES` value for a bundle: its device ids joined by commas; empty
    /// when it has no GPU (or there is no such bundle).
    pub fn cuda_visible_devices(&self, bundle: usize) -> String {
        let Some(placement) = self.bundles.get(bundle) else {
            return String::new();
        };
        let devices: Vec<&str> = placement.gpus.iter().map(|share| share.device.as_str()).collect();
        devices.join(",")
    }
}

/// Why a request cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unplaceable {
    /// No agent is registered at all.
    #[error("no agent is registered")]
    NoAgents,
    /// It fits the registered agents, but not beside what is allocated now.
    #[error("waiting for free resources")]
    NotNow,
    /// No registered agent could ever hold it, even with nothing allocated; the reason says why.
    #[error("{0}")]
    Never(String),
}

/// Why [`Cluster::reserve`] cannot take an allocation again; nothing is taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// A placement's agent is not registered.
    #[error("agent \"{agent}\" is not registered")]
    NotRegistered {
        /// The agent's name.
        agent: String,
    },
    /// A placement names a device the agent does not have.
    #[error("agent \"{agent}\" has no device {device} (it has {inventory})")]
    NoDevice {
        /// The agent's name.
        agent: String,
        /// The device named (`?` when none could be singled out).
        device: String,
        /// What the agent has, described.
        inventory: String,
    },
    /// A placement needs more than is free on the agent now.
    #[error("agent \"{agent}\" does not have {bundle} free on devices [{devices}]")]
    NotFree {
        /// The agent's name.
        agent: String,
        /// The bundle, described.
        bundle: String,
        /// The devices it names, joined by commas.
        devices: String,
    },
}

/// A schedulable device: a GPU without MIG, or one MIG instance.
#[derive(Debug, Clone, PartialEq)]
struct Device {
    id: String,
    index: u32,
    /// Free share in thousandths (1000 = the whole device).
    free: u64,
}

/// An agent's amounts in integer units: its totals, or what is free of them.
#[derive(Debug, Clone, PartialEq)]
struct Capacity {
    cpu: u64,
    memory: u64,
    custom: BTreeMap<String, u64>,
    devices: Vec<Device>,
}

/// Device positions (in [`Capacity::devices`]) and the thousandths taken of each.
type Shares = Vec<(usize, u64)>;

impl Capacity {
    fn of(inventory: &Inventory) -> Capacity {
        let mut gpus: Vec<&GpuInfo> = inventory.gpus.iter().collect();
        gpus.sort_by_key(|gpu| gpu.index);
        let mut devices = Vec::new();
        for gpu in gpus {
            if gpu.mig.is_empty() {
                devices.push(Device {
                    id: gpu.index.to_string(),
                    index: gpu.index,
                    free: MILLI,
                });
            } else {
                devices.extend(gpu.mig.iter().map(|mig| Device {
                    id: mig.uuid.clone(),
                    index: gpu.index,
                    free: MILLI,
                }));
            }
        }
        Capacity {
            cpu: to_milli(inventory.cpus),
            memory: inventory.memory,
            custom: inventory
                .custom
                .iter()
                .map(|(name, amount)| (name.clone(), to_milli(*amount)))
                .collect(),
            devices,
        }
    }

    fn gpu_free(&self) -> u64 {
        self.devices.iter().map(|device| device.free).sum()
    }

    fn custom(&self, name: &str) -> u64 {
        self.custom.get(name).copied().unwrap_or(0)
    }

    /// Places one bundle, taking what it uses; `None` (and nothing taken) when it does not fit.
    /// A fraction goes to the device with the least free share that still holds it (lowest
    /// position on a tie); a whole number n to the first n completely free devices.
    fn take(&mut self, need: &Need) -> Option<Shares> {
        if need.cpu > self.cpu || need.memory > self.memory {
            return None;
        }
        if need.custom.iter().any(|(name, amount)| *amount > self.custom(name)) {
            return None;
        }
        let shares: Shares = if need.gpu == 0 {
            Vec::new()
        } else if need.gpu < MILLI {
            let (position, _) = self
                .devices
                .iter()
                .enumerate()
                .filter(|(_, device)| device.free >= need.gpu)
                .min_by_key(|(position, device)| (device.free, *position))?;
            vec![(position, need.gpu)]
        } else {
            let count = usize::try_from(need.whole_devices()).unwrap_or(usize::MAX);
            let free: Shares = self
                .devices
                .iter()
                .enumerate()
                .filter(|(_, device)| device.free == MILLI)
                .map(|(position, _)| (position, MILLI))
                .take(count)
                .collect();
            if free.len() < count {
                return None;
            }
            free
        };
        self.withdraw(need, &shares);
        Some(shares)
    }

    /// Takes a placed bundle's amounts.
    fn withdraw(&mut self, need: &Need, shares: &[(usize, u64)]) {
        debug_assert!(
            need.cpu <= self.cpu && need.memory <= self.memory,
            "withdrawing more than is free"
        );
        self.cpu = self.cpu.saturating_sub(need.cpu);
        self.memory = self.memory.saturating_sub(need.memory);
        for (name, amount) in &need.custom {
            let free = self.custom.entry(name.clone()).or_default();
            debug_assert!(*amount <= *free, "withdrawing more {name} than is free");
            *free = free.saturating_sub(*amount);
        }
        for (position, share) in shares {
            let device = &mut self.devices[*position];
            debug_assert!(
                *share <= device.free,
                "withdrawing more of device {} than is free",
                device.id
            );
            device.free = device.free.saturating_sub(*share);
        }
    }

    /// Gives back a placed bundle's amounts, never above `total`.
    fn deposit(&mut self, need: &Need, shares: &[(usize, u64)], total: &Capacity) {
        self.cpu = self.cpu.saturating_add(need.cpu);
        debug_assert!(self.cpu <= total.cpu, "released more cpu than the agent has");
        self.cpu = self.cpu.min(total.cpu);
        self.memory = self.memory.saturating_add(need.memory);
        debug_assert!(self.memory <= total.memory, "released more memory than the agent has");
        self.memory = self.memory.min(total.memory);
        for (name, amount) in &need.custom {
            let limit = total.custom(name);
            let free = self.custom.entry(name.clone()).or_default();
            *free = free.saturating_add(*amount);
            debug_assert!(*free <= limit, "released more {name} than the agent has");
            *free = (*free).min(limit);
        }
        for (position, share) in shares {
            let device = &mut self.devices[*position];
            device.free = device.free.saturating_add(*share);
            debug_assert!(
                device.free <= MILLI,
                "released more of device {} than it has",
                device.id
            );
            device.free = device.free.min(MILLI);
        }
    }
}

/// One bundle held on an agent, as committed.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    need: Need,
    shares: Shares,
}

/// An agent as the cluster keeps it.
#[derive(Debug, Clone)]
struct AgentState {
    inventory: Inventory,
    total: Capacity,
    free: Capacity,
    held: Vec<Held>,
}

impl AgentState {
    fn capacity(&self, view: View) -> &Capacity {
        match view {
            View::Free => &self.free,
            View::Total => &self.total,
        }
    }

    /// The device positions of a placement's shares; `None` when one names no device here.
    fn shares_of(&self, placement: &BundlePlacement) -> Option<Shares> {
        placement
            .gpus
            .iter()
            .map(|share| {
                let position = self.total.devices.iter().position(|device| device.id == share.device)?;
                Some((position, to_milli(share.share)))
            })
            .collect()
    }
}

/// Whether to place against what is free now or against an agent's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Free,
    Total,
}

/// The registered agents, what each has, and what is allocated on each: the bin packer.
///
/// [`place`](Cluster::place) answers where a request fits without taking anything,
/// [`allocate`](Cluster::allocate) also takes it, and [`release`](Cluster::release) gives it
/// back.
///
/// Pack puts the whole request on the agent that fits it with the least free capacity left
/// (best fit, compared by free GPU share, then CPUs, then memory; ties by name), so trials
/// pack tightly and CPU-only trials keep off GPU machines. Spread puts each bundle on a
/// different agent, preferring the agents with the most free capacity (by GPU, CPUs and
/// memory for a bundle that asks for a GPU; by CPUs and memory otherwise; ties by name).
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    agents: BTreeMap<String, AgentState>,
}

impl Cluster {
    /// Registers an agent; re-adding a name replaces it, with nothing allocated.
    pub fn add_agent(&mut self, name: &str, inventory: Inventory) {
        let total = Capacity::of(&inventory);
        self.agents.insert(
            name.to_owned(),
            AgentState {
                inventory,
                free: total.clone(),
                total,
                held: Vec::new(),
            },
        );
    }

    /// Unregisters an agent; whether it was registered.
    pub fn remove_agent(&mut self, name: &str) -> bool {
        self.agents.remove(name).is_some()
    }

    /// The registered agents and their inventories, by name.
    pub fn agents(&self) -> impl Iterator<Item = (&str, &Inventory)> {
        self.agents
            .iter()
            .map(|(name, agent)| (name.as_str(), &agent.inventory))
    }

    /// Whether no agent is registered.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// How many agents are registered.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// An agent's inventory.
    pub fn inventory(&self, agent: &str) -> Option<&Inventory> {
        self.agents.get(agent).map(|state| &state.inventory)
    }

    /// What is free on an agent now, as a bundle (`gpu` is the sum of free device shares).
    pub fn free(&self, agent: &str) -> Option<Bundle> {
        let free = &self.agents.get(agent)?.free;
        Some(Bundle {
            cpu: free.cpu as f64 / MILLI as f64,
            gpu: free.gpu_free() as f64 / MILLI as f64,
            memory: free.memory,
            custom: free
                .custom
                .iter()
                .map(|(name, amount)| (name.clone(), *amount as f64 / MILLI as f64))
                .collect(),
        })
    }

    /// Each device of an agent (id as in `CUDA_VISIBLE_DEVICES`) and the share allocated on it,
    /// in device order; empty for an unknown agent.
    pub fn device_use(&self, agent: &str) -> Vec<(String, f64)> {
        let Some(state) = self.agents.get(agent) else {
            return Vec::new();
        };
        state
            .free
            .devices
            .iter()
            .map(|device| (device.id.clone(), (MILLI - device.free) as f64 / MILLI as f64))
            .collect()
    }

    /// Where the request fits now, without allocating it.
    ///
    /// [`Unplaceable::NotNow`] when it fits the registered agents but not beside what is
    /// allocated; [`Unplaceable::Never`] when it cannot fit even with nothing allocated (or the
    /// request is invalid); [`Unplaceable::NoAgents`] when no agent is registered.
    pub fn place(&self, request: &ResourceRequest) -> Result<Allocation, Unplaceable> {
        if let Err(error) = request.validate() {
            return Err(Unplaceable::Never(error.to_string()));
        }
        if self.agents.is_empty() {
            return Err(Unplaceable::NoAgents);
        }
        if let Some(allocation) = self.try_place(request, View::Free) {
            return Ok(allocation);
        }
        Err(match self.never_fits(request) {
            Some(reason) => Unplaceable::Never(reason),
            None => Unplaceable::NotNow,
        })
    }

    /// Places the request (see [`place`](Cluster::place)) and takes what it uses.
    pub fn allocate(&mut self, request: &ResourceRequest) -> Result<Allocation, Unplaceable> {
        let allocation = self.place(request)?;
        for placement in &allocation.bundles {
            let agent = self
                .agents
                .get_mut(&placement.agent)
                .expect("placed on a registered agent");
            let shares = agent.shares_of(placement).expect("placed on the agent's devices");
            let held = Held {
                need: Need::of(&placement.bundle),
                shares,
            };
            agent.free.withdraw(&held.need, &held.shares);
            agent.held.push(held);
        }
        Ok(allocation)
    }

    /// Takes again what an allocation the cluster does not hold uses, such as the allocations of
    /// trials still running on an agent that was re-added (which empties it) or that a restarted
    /// server recovers. All or nothing: when a placement's agent is not registered, names a
    /// device the agent lacks, or needs more than is free, nothing is taken and the error says
    /// which. Reserving an allocation that is already held takes its amounts twice.
    pub fn reserve(&mut self, allocation: &Allocation) -> Result<(), ReserveError> {
        let mut free: BTreeMap<&str, Capacity> = BTreeMap::new();
        let mut held: Vec<(&str, Held)> = Vec::new();
        for placement in &allocation.bundles {
            let name = placement.agent.as_str();
            let Some(agent) = self.agents.get(name) else {
                return Err(ReserveError::NotRegistered { agent: name.to_owned() });
            };
            let Some(shares) = agent.shares_of(placement) else {
                let missing = placement
                    .gpus
                    .iter()
                    .find(|share| agent.total.devices.iter().all(|device| device.id != share.device))
                    .map_or("?", |share| share.device.as_str());
                return Err(ReserveError::NoDevice {
                    agent: name.to_owned(),
                    device: missing.to_owned(),
                    inventory: agent.inventory.describe(),
                });
            };
            let need = Need::of(&placement.bundle);
            let left = free.entry(name).or_insert_with(|| agent.free.clone());
            let mut used = vec![0; left.devices.len()];
            for (position, share) in &shares {
                used[*position] += share;
            }
            let fits = need.cpu <= left.cpu
                && need.memory <= left.memory
                && need
                    .custom
                    .iter()
                    .all(|(resource, amount)| *amount <= left.custom(resource))
                && used
                    .iter()
                    .zip(&left.devices)
                    .all(|(share, device)| *share <= device.free);
            if !fits {
                return Err(ReserveError::NotFree {
                    agent: name.to_owned(),
                    bundle: placement.bundle.describe(),
                    devices: placement
                        .gpus
                        .iter()
                        .map(|share| share.device.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                });
            }
            left.withdraw(&need, &shares);
            held.push((name, Held { need, shares }));
        }
        for (name, left) in free {
            self.agents.get_mut(name).expect("checked above").free = left;
        }
        for (name, held) in held {
            self.agents.get_mut(name).expect("checked above").held.push(held);
        }
        Ok(())
    }

    /// Gives back what an allocation took. A placement that is not held (already released, on
    /// an agent that was removed, or from before the agent was re-added) is skipped.
    pub fn release(&mut self, allocation: &Allocation) {
        for placement in &allocation.bundles {
            let Some(agent) = self.agents.get_mut(&placement.agent) else {
                continue;
            };
            let Some(shares) = agent.shares_of(placement) else {
                continue;
            };
            let held = Held {
                need: Need::of(&placement.bundle),
                shares,
            };
            let Some(position) = agent.held.iter().position(|other| *other == held) else {
                continue;
            };
            agent.held.swap_remove(position);
            agent.free.deposit(&held.need, &held.shares, &agent.total);
        }
    }

    /// Why no registered agent could ever hold the request, judged on their totals with
    /// nothing allocated; `None` when it fits them (or no agent is registered yet).
    pub fn never_fits(&self, request: &ResourceRequest) -> Option<String> {
        if let Err(error) = request.validate() {
            return Some(error.to_string());
        }
        if self.agents.is_empty() || self.try_place(request, View::Total).is_some() {
            return None;
        }
        let needs: Vec<Need> = request.bundles.iter().map(Need::of).collect();
        match request.placement {
            Placement::Pack => Some(self.shortfall(&needs).unwrap_or_else(|| {
                format!(
                    "needs {} on one agent; no agent has all of it",
                    Need::sum(&needs).to_bundle().describe()
                )
            })),
            Placement::Spread => {
                let registered = self.agents.len();
                if needs.len() > registered {
                    let verb = if registered == 1 { "is" } else { "are" };
                    return Some(format!(
                        "spread needs {} agents; {registered} {verb} registered",
                        needs.len()
                    ));
                }
                for (position, need) in needs.iter().enumerate() {
                    if let Some(reason) = self.shortfall(std::slice::from_ref(need)) {
                        return Some(if needs.len() > 1 {
                            format!("bundle {position}: {reason}")
                        } else {
                            reason
                        });
                    }
                }
                let matched = self.spread(&needs, View::Total).iter().flatten().count();
                Some(format!(
                    "spread needs {} agents that each hold one bundle; only {matched} can",
                    needs.len()
                ))
            }
        }
    }

    /// Which single amount of the summed needs exceeds every agent's total, phrased for a user.
    fn shortfall(&self, needs: &[Need]) -> Option<String> {
        let sum = Need::sum(needs);
        let totals = || self.agents.values().map(|agent| &agent.total);
        let largest_cpu = totals().map(|total| total.cpu).max().unwrap_or(0);
        if sum.cpu > largest_cpu {
            return Some(format!(
                "needs cpu={} on one agent; largest agent has {}",
                milli_text(sum.cpu),
                milli_text(largest_cpu)
            ));
        }
        if sum.gpu > 0 {
            let most_devices = totals().map(|total| total.devices.len()).max().unwrap_or(0) as u64;
            let whole: u64 = needs.iter().map(Need::whole_devices).sum();
            let fractions: u64 = needs.iter().filter(|need| need.gpu < MILLI).map(|need| need.gpu).sum();
            let devices = whole + fractions.div_ceil(MILLI);
            if most_devices == 0 {
                return Some(format!(
                    "needs gpu={} on one agent; no agent has a GPU",
                    milli_text(sum.gpu)
                ));
            }
            if devices > most_devices {
                return Some(format!(
                    "needs gpu={} on one agent; largest agent has {most_devices}",
                    milli_text(sum.gpu)
                ));
            }
        }
        let largest_memory = totals().map(|total| total.memory).max().unwrap_or(0);
        if sum.memory > largest_memory {
            return Some(format!(
                "needs memory={} on one agent; largest agent has {}",
                format_size(sum.memory),
                format_size(largest_memory)
            ));
        }
        for (name, amount) in &sum.custom {
            let largest = totals().map(|total| total.custom(name)).max().unwrap_or(0);
            if largest == 0 {
                return Some(format!(
                    "needs {name}={} on one agent; no agent has {name}",
                    milli_text(*amount)
                ));
            }
            if *amount > largest {
                return Some(format!(
                    "needs {name}={} on one agent; largest agent has {}",
                    milli_text(*amount),
                    milli_text(largest)
                ));
            }
        }
        None
    }

    /// Places a valid request against free or total amounts.
    fn try_place(&self, request: &ResourceRequest, view: View) -> Option<Allocation> {
        let needs: Vec<Need> = request.bundles.iter().map(Need::of).collect();
        let placed: Vec<(&str, Shares)> = match request.placement {
            Placement::Pack => {
                let (agent, shares) = self.pack(&needs, view)?;
                shares.into_iter().map(|shares| (agent, shares)).collect()
            }
            Placement::Spread => self.spread(&needs, view).into_iter().collect::<Option<_>>()?,
        };
        let bundles = placed
            .into_iter()
            .zip(&request.bundles)
            .map(|((agent, shares), bundle)| {
                let devices = &self.agents[agent].total.devices;
                BundlePlacement {
                    agent: agent.to_owned(),
                    bundle: bundle.clone(),
                    gpus: shares
                        .into_iter()
                        .map(|(position, share)| GpuShare {
                            device: devices[position].id.clone(),
                            index: devices[position].index,
                            share: share as f64 / MILLI as f64,
                        })
                        .collect(),
                }
            })
            .collect();
        Some(Allocation { bundles })
    }

    /// Best fit: the agent that holds every bundle with the least left over, and the shares
    /// of each bundle (in request order).
    fn pack(&self, needs: &[Need], view: View) -> Option<(&str, Vec<Shares>)> {
        // Whole devices first, then fractions largest first: fewer fractions strand a device.
        let mut order: Vec<usize> = (0..needs.len()).collect();
        order.sort_by_key(|&position| std::cmp::Reverse(needs[position].gpu));
        // (what is left over: gpu, cpu, memory), the agent, the shares of each bundle.
        type Fit<'a> = ((u64, u64, u64), &'a str, Vec<Shares>);
        let mut best: Option<Fit<'_>> = None;
        for (name, agent) in &self.agents {
            let mut left = agent.capacity(view).clone();
            let mut shares = vec![Vec::new(); needs.len()];
            let fits = order.iter().all(|&position| match left.take(&needs[position]) {
                Some(taken) => {
                    shares[position] = taken;
                    true
                }
                None => false,
            });
            if !fits {
                continue;
            }
            let key = (left.gpu_free(), left.cpu, left.memory);
            if best.as_ref().is_none_or(|(best_key, _, _)| key < *best_key) {
                best = Some((key, name, shares));
            }
        }
        best.map(|(_, name, shares)| (name, shares))
    }

    /// One distinct agent per bundle (a maximum bipartite matching, trying the agents with the
    /// most free capacity first); `None` for each bundle left without an agent.
    fn spread(&self, needs: &[Need], view: View) -> Vec<Option<(&str, Shares)>> {
        let agents: Vec<(&str, &Capacity)> = self
            .agents
            .iter()
            .map(|(name, agent)| (name.as_str(), agent.capacity(view)))
            .collect();
        let candidates: Vec<Vec<usize>> = needs
            .iter()
            .map(|need| {
                let mut fitting: Vec<usize> = (0..agents.len())
                    .filter(|&agent| agents[agent].1.clone().take(need).is_some())
                    .collect();
                let key = |agent: usize| {
                    let capacity = agents[agent].1;
                    if need.gpu > 0 {
                        (capacity.gpu_free(), capacity.cpu, capacity.memory)
                    } else {
                        (capacity.cpu, capacity.memory, 0)
                    }
                };
                // Most free first; the stable sort keeps name order on ties.
                fitting.sort_by_key(|&agent| std::cmp::Reverse(key(agent)));
                fitting
            })
            .collect();
        let mut owner: Vec<Option<usize>> = vec![None; agents.len()];
        for bundle in 0..needs.len() {
            let mut visited = vec![false; agents.len()];
            augment(bundle, &candidates, &mut visited, &mut owner);
        }
        let mut placed: Vec<Option<(&str, Shares)>> = vec![None; needs.len()];
        for (agent, bundle) in owner.iter().enumerate() {
            if let Some(bundle) = bundle {
                let shares = agents[agent].1.clone().take(&needs[*bundle]).expect("a candidate fits");
                placed[*bundle] = Some((agents[agent].0, shares));
            }
        }
        placed
    }
}

/// Kuhn's augmenting path: finds `bundle` an agent, moving earlier bundles to other candidates
/// of theirs only when none of its own candidates is free (so preferences hold where they can).
fn augment(bundle: usize, candidates: &[Vec<usize>], visited: &mut [bool], owner: &mut [Option<usize>]) -> bool {
    if let Some(&agent) = candidates[bundle].iter().find(|&&agent| owner[agent].is_none()) {
        visited[agent] = true;
        owner[agent] = Some(bundle);
        return true;
    }
    for &agent in &candidates[bundle] {
        if visited[agent] {
            continue;
        }
        visited[agent] = true;
        if owner[agent].is_none_or(|other| augment(other, candidates, visited, owner)) {
            owner[agent] = Some(bundle);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests;

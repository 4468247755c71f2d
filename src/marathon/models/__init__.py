"""The data model: frozen msgspec Structs, one module per domain object."""

from .agent import AgentInfo as AgentInfo
from .agent import Attribute as Attribute
from .agent import Offer as Offer
from .agent import PortRange as PortRange
from .app import AppDefinition as AppDefinition
from .app import AppUpdate as AppUpdate
from .instance import Condition as Condition
from .instance import Goal as Goal
from .instance import Instance as Instance
from .instance import InstanceState as InstanceState
from .instance import Task as Task
from .instance import TaskStatus as TaskStatus
from .resources import RejectReason as RejectReason
from .resources import Resources as Resources

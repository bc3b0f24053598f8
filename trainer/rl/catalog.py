"""The reference critic for RLlib's SAC: each Q network is one MLP on the concatenation [obs, action].

RLlib 2.60's ``SACCatalog`` builds every Q net as a two-stream encoder (an MLP on the observation *and* an
MLP on the action, concatenated and projected by a 512 -> 256 output layer) even with
``fusionnet_hiddens=[]``: about 2.5x the parameters and compute of the reference's ``[256, 256]`` ReLU Q
network on ``(obs, action)``, and not the architecture the design (or the reference's sweeps) describe.
``ConcatQSACCatalog`` keeps the policy and everything else of ``SACCatalog`` and swaps the Q encoder for
``MLP([obs, action])``; the Q head (``latent -> 1``) is unchanged, so the full Q net is
``Linear(obs+act, h1) -> act -> ... -> Linear(h_last, 1)``.
"""

from __future__ import annotations

import torch
from ray.rllib.algorithms.sac.sac_catalog import SACCatalog
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT, Encoder
from ray.rllib.core.models.configs import MLPEncoderConfig
from ray.rllib.core.models.torch.encoder import TorchMLPEncoder


class ConcatObsActionEncoder(TorchMLPEncoder):
    """``TorchMLPEncoder`` over ``concat(obs, action)``."""

    def _forward(self, inputs: dict, **kwargs) -> dict:
        return {ENCODER_OUT: self.net(torch.cat([inputs[Columns.OBS], inputs[Columns.ACTIONS]], dim=-1))}


class ConcatQSACCatalog(SACCatalog):
    """``SACCatalog`` whose continuous Q encoders are MLPs on ``[obs, action]``."""

    def _build_qf_encoder_continuous(self, framework: str) -> Encoder:
        if framework != "torch":
            raise ValueError(f"only torch is supported, got {framework!r}")
        mc = self._model_config_dict
        obs_dim = int(self.observation_space.shape[0])
        act_dim = int(self.action_space.shape[0])
        config = MLPEncoderConfig(
            input_dims=[obs_dim + act_dim],
            hidden_layer_dims=mc["fcnet_hiddens"][:-1],
            hidden_layer_activation=mc["fcnet_activation"],
            hidden_layer_weights_initializer=mc["fcnet_kernel_initializer"],
            hidden_layer_weights_initializer_config=mc["fcnet_kernel_initializer_kwargs"],
            hidden_layer_bias_initializer=mc["fcnet_bias_initializer"],
            hidden_layer_bias_initializer_config=mc["fcnet_bias_initializer_kwargs"],
            output_layer_dim=self.latent_dims[0],
            output_layer_activation=mc["fcnet_activation"],
            output_layer_weights_initializer=mc["fcnet_kernel_initializer"],
            output_layer_weights_initializer_config=mc["fcnet_kernel_initializer_kwargs"],
            output_layer_bias_initializer=mc["fcnet_bias_initializer"],
            output_layer_bias_initializer_config=mc["fcnet_bias_initializer_kwargs"],
        )
        self.qf_encoder_config = config
        return ConcatObsActionEncoder(config)
